"""The whole pipeline on a small shapes world, and an interrupted run that resumes.

Real stages end to end: Ray Data + open_clip + faiss curation, vLLM generation, Ray
Train + DeepSpeed SFT / reward model / MM-DPO, the Ray Serve reward service, evaluate,
report. Sizes come from configs/pipeline.smoke.yaml.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from mmrlhf_ray.core.stage import StageDir

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "pipeline.smoke.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counts(run: Path, stage: str) -> dict:
    manifest = StageDir(str(run), stage).read_manifest()
    # The pipeline stops the reward service it started: that stage ends "stopped".
    finished = ("done", "stopped") if stage == "serve-reward" else ("done",)
    assert manifest and manifest["status"] in finished, f"{stage} not done: {manifest}"
    return manifest["counts"]


@pytest.mark.ray
@pytest.mark.vllm
def test_whole_pipeline_on_a_small_world(ray_session, tmp_path):
    from jobs.pipeline import main as pipeline_main
    from mmrlhf_ray.flows.config import PipelineConfig

    run = tmp_path / "run"
    argv = ["--config", SMOKE, f"run_dir={run}", f"overrides.serve-reward=[port={_free_port()}]"]
    assert pipeline_main(argv) == 0
    for stage in PipelineConfig().stages:  # every stage but the optional import
        counts = _counts(run, stage)
        assert (
            counts["in"] == counts["out"] + counts.get("unselected", 0) + counts["quarantined"]
        ), stage
    # Data really flowed: pairs were scored and carry reference log-probs and margins.
    scored = StageDir(str(run), "ref-logps").read(
        columns=["margin", "margin_source", "ref_chosen_logp"]
    )
    pairs = StageDir(str(run), "pairs").count_rows()
    assert _counts(run, "score")["in"] == pairs > 0
    assert (
        scored.num_rows
        == _counts(run, "ref-logps")["out"]
        == pairs - _counts(run, "score")["quarantined"]
    )
    assert set(scored.column("margin_source").to_pylist()) == {"reward-service"}
    assert (
        scored.column("margin").null_count == 0 and scored.column("ref_chosen_logp").null_count == 0
    )
    # The report's before/after figures are the ones computed from the evaluate artifacts.
    from jobs.evaluate import answers_of
    from mmrlhf_ray.evaluation.record import EvaluationRecord
    from mmrlhf_ray.evaluation.shapes import policy_metrics

    metrics = EvaluationRecord.read(run / "evaluate").toy_benchmark
    assert set(metrics) == {"sft", "mm-dpo"}
    bench = (
        StageDir(str(run), "toyworld/benchmark")
        .read()
        .sort_by("sample_id")
        .slice(0, 10)
        .to_pylist()
    )
    for policy in metrics:
        recomputed = policy_metrics(bench, answers_of(StageDir(str(run), "evaluate"), policy))
        assert recomputed == metrics[policy]
    report = (run / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| overall_accuracy |"))
    shown = [float(v.split()[0]) for v in row.strip("|").split("|")[1:]]  # "0.275 [lo, hi], n"
    assert all("[" in v and "n = 10" in v for v in row.strip("|").split("|")[1:])
    assert "| overall_accuracy | sft → mm-dpo |" in report  # the paired comparison
    assert shown == pytest.approx(
        [metrics["sft"]["overall_accuracy"], metrics["mm-dpo"]["overall_accuracy"]], abs=1e-3
    )
    for image in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (run / image).stat().st_size > 0, image
    assert "toy_benchmark.png" in report and (run / "report.html").exists()


# Interrupted runs that resume: tests/e2e/test_signals.py
