"""The signal contract: Ctrl-C (SIGINT) exits 130 and SIGTERM 143 wherever it lands, and
the same command then resumes to the same counts.

Every interrupt is sent from a known point of the run, never after a sleep:
``MMRLHF_INTERRUPT_AT=<point>[@N]:<SIGNAL>`` makes the first process that reaches
``interrupt_point("<point>")`` (the driver, a Ray Data actor, a Ray Train worker, a Serve
replica) signal the driver, then hold its work until the driver stops (mmrlhf_ray/core/signals.py).
Points: ``curate.embed`` (CLIP actors of a Ray Data execution), ``generate.batch``
(generator actors), ``train.step`` (rank 0 of a Ray Train run, after step 1),
``serve.start`` (a replica being constructed while ``serve.run`` waits),
``pipeline.before-<stage>`` (between two stages), ``serve.request@N`` (the N-th request).
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmrlhf_ray.core.stage import StageDir
from tests.serve.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "pipeline.smoke.yaml")
PREFIX = ["toyworld", "curate", "generate", "annotate", "pairs"]
SIMULATED_ONLY = (
    'generate=[max_queries=12, chunk_size=6, "models=[{name: sim-strong, kind: simulated, '
    'n: 1}, {name: sim-medium, kind: simulated, n: 1}, {name: sim-weak, kind: simulated, n: 1}]"]'
)
EXIT = {"SIGINT": 130, "SIGTERM": 143}

pytestmark = [pytest.mark.ray]


def _mmrlhf(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmrlhf_ray.core.cli", *args]


def _env(point: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # each run starts (and ends) its own local Ray
    env.pop("MMRLHF_INTERRUPT_DRIVER", None)
    env.pop("MMRLHF_INTERRUPT_AT", None)
    if point:
        env["MMRLHF_INTERRUPT_AT"] = point
    return env


def _run(
    cmd: list[str], log: Path, point: str | None = None, timeout: float = 900
) -> tuple[int, str]:
    """Run ``cmd`` in its own session (as a terminal would: Ctrl-C reaches its group)."""
    with open(log, "w+") as out:  # a file: a full pipe would block the run
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(point),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            out.seek(0)
            pytest.fail(f"{cmd[3:5]} at {point}: no exit within {timeout}s\n{out.read()[-3000:]}")
        out.seek(0)
        return proc.returncode, out.read()


def _counts(run: Path, stage: str) -> dict:
    manifest = StageDir(str(run), stage).read_manifest()
    assert manifest and manifest["status"] == "done", f"{stage} not done: {manifest}"
    return manifest["counts"]


def _pipeline_argv(run: Path) -> list[str]:
    return [
        "pipeline",
        "--config",
        SMOKE,
        f"run_dir={run}",
        f"stages=[{', '.join(PREFIX)}]",
        "report=false",
        f"overrides.{SIMULATED_ONLY}",
    ]


# (point, signal, the stage it lands in): both signals inside Ray Data executions (the
# CLIP actor pool, the generator actors) and between two stages.
CHAIN = [
    ("curate.embed", "SIGINT", "curate"),
    ("generate.batch", "SIGTERM", "generate"),
    ("pipeline.before-annotate", "SIGTERM", "annotate"),
    ("pipeline.before-pairs", "SIGINT", "pairs"),
]


@pytest.mark.timeout(1800)  # 6 runs of Ray start-up: slow on a busy machine
def test_pipeline_interrupted_anywhere_resumes_to_the_same_counts(ray_session, tmp_path):
    from jobs.pipeline import main as pipeline_main

    reference = tmp_path / "reference"
    assert pipeline_main(_pipeline_argv(reference)[1:]) == 0

    run = tmp_path / "interrupted"
    for i, (point, sig, stage) in enumerate(CHAIN):
        code, out = _run(_mmrlhf(*_pipeline_argv(run)), tmp_path / f"run{i}.log", f"{point}:{sig}")
        assert code == EXIT[sig], f"{point}:{sig}\n{out[-3000:]}"
        assert f"interrupted ({sig}) during stage '{stage}'" in out, out[-3000:]
        assert not StageDir(str(run), stage).is_done()
        assert "Traceback" not in out, out[-3000:]
    code, out = _run(_mmrlhf(*_pipeline_argv(run)), tmp_path / "resumed.log")
    assert code == 0, out[-3000:]
    for stage in PREFIX:
        assert _counts(run, stage) == _counts(reference, stage), stage
    assert StageDir(str(run), "curate").read_manifest()["attempts"] == 2  # interrupted once

    def ids(r: Path) -> list[str]:
        return sorted(
            StageDir(str(r), "pairs").read(columns=["pair_id"]).column("pair_id").to_pylist()
        )

    assert ids(run) == ids(reference) and len(ids(run)) > 0


SFT_ARGS = [
    "max_rows=40",
    "benchmark_size=0",  # no before/after generation: the Train run is what is tested
    "max_new_tokens=4",
    "train.max_steps=3",
    "train.checkpoint_every=100",
    "train.micro_batch_size=4",
    "train.warmup_steps=1",
    "train.num_workers=1",
]


@pytest.mark.timeout(1800)
def test_stage_interrupted_inside_a_train_run(ray_session, tmp_path):
    """`mmrlhf sft`: SIGINT, then SIGTERM, while Ray Train trains; the re-run finishes
    with every step once and the counts of an uninterrupted run (48 = 40 + 8 unselected)."""
    from jobs.build_models import main as build_models
    from jobs.toyworld import main as toyworld

    run = tmp_path / "run"
    assert (
        toyworld([f"run_dir={run}", "pool_size=48", "benchmark_size=10", "rows_per_shard=48"]) == 0
    )
    assert build_models([f"run_dir={run}", "corpus_size=500"]) == 0
    cmd = _mmrlhf("sft", f"run_dir={run}", *SFT_ARGS)
    for sig in ("SIGINT", "SIGTERM"):
        code, out = _run(cmd, tmp_path / f"{sig}.log", f"train.step:{sig}")
        assert code == EXIT[sig], out[-3000:]
        assert f"mmrlhf sft: stopped by {sig}; re-run `mmrlhf sft" in out, out[-3000:]
        assert not StageDir(str(run), "sft").is_done()
    code, out = _run(cmd, tmp_path / "resumed.log")
    assert code == 0, out[-3000:]
    manifest = StageDir(str(run), "sft").read_manifest()
    assert manifest["counts"] == {"in": 48, "out": 40, "quarantined": 0, "unselected": 8}
    assert manifest["steps"] == 3 and manifest["attempts"] == 3
    with open(run / "sft" / "metrics.csv") as f:
        assert [int(float(r["step"])) for r in csv.DictReader(f)] == [1, 2, 3]


@pytest.fixture(scope="module")
def reward_model_dir(tiny_models, tmp_path_factory) -> str:
    from mmrlhf_ray.reward.model import build_tiny_reward_model

    return build_tiny_reward_model(
        tiny_models["policy"], tmp_path_factory.mktemp("rm") / "model", seed=0
    )


def _serve_cmd(run: Path, model: str, port: int) -> list[str]:
    return _mmrlhf(
        "serve-reward",
        f"run_dir={run}",
        f"model_path={model}",
        f"port={port}",
        "detach=false",
        "critique_max_new_tokens=4",
        "access_log=false",
    )


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_reward_interrupted_while_starting(reward_model_dir, tmp_path, sig):
    run = tmp_path / "run"
    code, out = _run(
        _serve_cmd(run, reward_model_dir, free_port()),
        tmp_path / "serve.log",
        f"serve.start:{sig}",
        timeout=300,
    )
    assert code == EXIT[sig], out[-3000:]
    assert f"mmrlhf serve-reward: stopped by {sig}" in out
    assert (StageDir(str(run), "serve-reward").read_manifest() or {}).get("status") == "running"
    assert "SIGTERM received" not in out and "Traceback" not in out, out[-3000:]


def test_serve_reward_sigterm_under_load_answers_every_accepted_request(reward_model_dir, tmp_path):
    """SIGTERM arrives with 4 requests inside the replica (sent by the replica itself at
    the 4th): all 4 are answered, the app is deleted, the process exits 143."""
    import requests

    run, port, n = tmp_path / "run", free_port(), 4
    log = tmp_path / "serve.log"
    with open(log, "w+") as out:
        proc = subprocess.Popen(
            _serve_cmd(run, reward_model_dir, port),
            cwd=ROOT,
            env=_env(f"serve.request@{n}:SIGTERM"),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            manifest = {}
            while proc.poll() is None and manifest.get("status") != "done":  # the marker
                manifest = StageDir(str(run), "serve-reward").read_manifest() or {}
                time.sleep(0.2)
            assert manifest.get("status") == "done", log.read_text()[-3000:]
            item = {"question": "Which colour?", "response": "Red.", "critique": "Fine."}

            def score(i: int) -> int:
                body = {"items": [dict(item, response=f"Red {i}.")]}
                return requests.post(
                    f"{manifest['url']}/v1/score", json=body, timeout=120
                ).status_code

            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                statuses = list(pool.map(score, range(n)))
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
        out.seek(0)
        text = out.read()
    assert statuses == [200] * n, text[-3000:]
    assert proc.returncode == 143, text[-3000:]
    assert StageDir(str(run), "serve-reward").read_manifest()["status"] == "stopped"
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]
