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
