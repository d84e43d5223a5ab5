"""The `.gpu` profiles load as their stages' configs and fit together as
`configs/pipeline.gpu.yaml` runs them: no stage falls back to a stage the GPU pipeline
skips, the reference policy is the policy MM-DPO starts from, models sit on shared storage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mmrlhf_ray.config import load_config
from mmrlhf_ray.stages import get_stage

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = yaml.safe_load((ROOT / "configs/pipeline.gpu.yaml").read_text())
GPU_CONFIGS = sorted(ROOT.glob("configs/*.gpu.yaml"))


def stage_config(stage: str):
    """The stage's config as the GPU pipeline builds it (its .gpu file + overrides)."""
    path = ROOT / f"configs/{stage}.gpu.yaml"
    overrides = ["run_dir=/mnt/shared/runs/test", *PIPELINE["overrides"].get(stage, [])]
    return load_config(get_stage(stage).config_class, path if path.exists() else None, overrides)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_every_gpu_profile_loads_and_reads_models_from_shared_storage(path):
    stage = path.name.removesuffix(".gpu.yaml")
    stage_config(stage)  # unknown keys or wrong types raise ConfigError
    paths = re.findall(r"(?<=[\s:=\"'\[])/[\w./-]+", path.read_text())
    for model in [p for p in paths if "models" in p.split("/")]:
        assert (model + "/").startswith("/mnt/shared/models/"), (
            f"{path.name}: {model} is not on shared storage"
        )


def test_the_gpu_pipeline_needs_no_skipped_stage():
    stages = PIPELINE["stages"]
    assert "build-models" not in stages and "sft" not in stages  # 7B checkpoints by path
    configs = {s: stage_config(s) for s in stages}
    assert configs["train-reward"].backbone, "train-reward would fall back to build-models"
    start = configs["train-dpo"].policy
    assert start and configs["ref-logps"].policy == start, "reference != MM-DPO's start policy"
    assert configs["evaluate"].policies["base"] == start
    assert configs["curate"].input_stage in stages
    assert (
        configs["score"].via == "handle"
        or configs["score"].token_env == configs["serve-reward"].token_env
    )
    assert configs["serve-reward"].token_env and configs["serve-reward"].host == "127.0.0.1"
    assert all(
        getattr(c, "run_dir", "/mnt/shared/runs/test") == "/mnt/shared/runs/test"
        for c in configs.values()
    )


ENCODING = ("max_response_tokens", "max_frames")


def test_one_encoding_across_ref_logps_train_dpo_and_self_improve():
    """Reference log-probs are taken over the inputs training sees, in the GPU pipeline
    and in every GPU self-improvement round (which must not fall back to CPU settings)."""
    from mmrlhf_ray.self_improve import round_configs

    ref, dpo = stage_config("ref-logps"), stage_config("train-dpo")
    assert {k: getattr(ref, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    si = stage_config("self-improve")
    round_ref, round_dpo = round_configs(si, "/mnt/shared/runs/test/r1", "/p")
    assert {k: getattr(round_ref, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    assert {k: getattr(round_dpo, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    assert round_ref.use_gpu and round_ref.bf16 and round_ref.policy == "/p"
    assert round_ref.pairs_stage == "score" and round_dpo.train.use_gpu


def test_self_improve_hands_train_dpo_encoding_to_ref_logps():
    from mmrlhf_ray.self_improve import SelfImproveConfig, round_configs

    cfg = SelfImproveConfig(
        ref_logps_overrides=["max_frames=2", "max_response_tokens=7"],
        dpo_overrides=["max_frames=6", "max_response_tokens=64"],
    )
    ref, dpo = round_configs(cfg, "/r", "/p")
    assert (
        (ref.max_frames, ref.max_response_tokens)
        == (6, 64)
        == (dpo.max_frames, dpo.max_response_tokens)
    )
    assert (ref.run_dir, ref.policy, ref.pairs_stage) == ("/r", "/p", "score")
    assert (dpo.run_dir, dpo.policy) == ("/r", "/p")
