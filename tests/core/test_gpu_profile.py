"""The `.gpu` profiles load as their stages' configs and fit together as
`configs/pipeline.gpu.yaml` runs them: no stage falls back to a stage the GPU pipeline
skips, the reference policy is the policy MM-DPO starts from, models sit on shared storage."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from mmrlhf_ray.cli import job_module
from mmrlhf_ray.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = yaml.safe_load((ROOT / "configs/pipeline.gpu.yaml").read_text())
GPU_CONFIGS = sorted(ROOT.glob("configs/*.gpu.yaml"))


def stage_config(stage: str):
    """The stage's config as the GPU pipeline builds it (its .gpu file + overrides)."""
    module = importlib.import_module(job_module(stage))
    source = Path(module.__file__).read_text()
    name = re.search(rf'parse_stage_args\(\s*"{stage}",\s*(\w+)', source).group(1)
    path = ROOT / f"configs/{stage}.gpu.yaml"
    overrides = ["run_dir=/mnt/shared/runs/test", *PIPELINE["overrides"].get(stage, [])]
    return load_config(getattr(module, name), path if path.exists() else None, overrides)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_every_gpu_profile_loads_and_reads_models_from_shared_storage(path):
    stage = path.name.removesuffix(".gpu.yaml")
    stage_config(stage)  # unknown keys or wrong types raise ConfigError
    paths = re.findall(r"(?<=[\s:=\"'\[])/[\w./-]+", path.read_text())
    for model in [p for p in paths if "models" in p.split("/")]:
        assert (model + "/").startswith("/mnt/shared/models/"), f"{path.name}: {model} is not on shared storage"


def test_the_gpu_pipeline_needs_no_skipped_stage():
    stages = PIPELINE["stages"]
    assert "build-models" not in stages and "sft" not in stages  # 7B checkpoints by path
    configs = {s: stage_config(s) for s in stages}
    assert configs["train-reward"].backbone, "train-reward would fall back to build-models"
    start = configs["train-dpo"].policy
    assert start and configs["ref-logps"].policy == start, "reference != MM-DPO's start policy"
    assert configs["evaluate"].policies["base"] == start
    assert configs["curate"].input_stage in stages
    assert configs["score"].via == "handle" or configs["score"].token_env == configs["serve-reward"].token_env
    assert configs["serve-reward"].token_env and configs["serve-reward"].host == "127.0.0.1"
    assert all(getattr(c, "run_dir", "/mnt/shared/runs/test") == "/mnt/shared/runs/test"
               for c in configs.values())


ENCODING = ("max_response_tokens", "max_frames")


def test_one_encoding_across_ref_logps_train_dpo_and_self_improve(monkeypatch):
    """Reference log-probs are taken over the inputs training sees, in the GPU pipeline
    and in every GPU self-improvement round (which must not fall back to CPU settings)."""
    from mmrlhf_ray.cli import parse_stage_args
    from mmrlhf_ray.dpo.config import DpoConfig, RefLogpsConfig
    from mmrlhf_ray.self_improve import round_stage_argv

    ref, dpo = stage_config("ref-logps"), stage_config("train-dpo")
    assert {k: getattr(ref, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    monkeypatch.chdir(ROOT)  # the profiles name configs/ relative to the repository
    si = stage_config("self-improve")
    _, dpo_argv = round_stage_argv(si, "/mnt/shared/runs/test/r1", "/p", {})
    round_dpo = parse_stage_args("train-dpo", DpoConfig, dpo_argv)
    encoding = {k: getattr(round_dpo, k) for k in ENCODING}
    ref_argv, _ = round_stage_argv(si, "/mnt/shared/runs/test/r1", "/p", encoding)
    round_ref = parse_stage_args("ref-logps", RefLogpsConfig, ref_argv)
    assert {k: getattr(round_ref, k) for k in ENCODING} == encoding == {
        k: getattr(dpo, k) for k in ENCODING}
    assert round_ref.use_gpu and round_ref.bf16 and round_ref.policy == "/p"
    assert round_ref.pairs_stage == "score" and round_dpo.train.use_gpu


def test_self_improve_hands_train_dpo_encoding_to_ref_logps():
    from mmrlhf_ray.self_improve import SelfImproveConfig, round_stage_argv

    cfg = SelfImproveConfig(ref_logps_overrides=["max_frames=2", "--config", "x.yaml"],
                            dpo_overrides=["max_frames=6"])
    ref, dpo = round_stage_argv(cfg, "r", "p", {"max_response_tokens": 64, "max_frames": 6})
    assert ref == ["--config", "x.yaml", "run_dir=r", "policy=p", "pairs_stage=score",
                   "max_frames=2", "max_response_tokens=64", "max_frames=6"]
    assert dpo == ["run_dir=r", "policy=p", "max_frames=6"]
