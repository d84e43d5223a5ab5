"""The stage YAMLs load into their config dataclasses and name their command first."""

from pathlib import Path

import pytest

from mmrlhf_ray.core.config import load_config
from mmrlhf_ray.reward.config import EvaluateRewardBenchConfig, TrainRewardConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "name,cls,command",
    [
        ("train-reward.yaml", TrainRewardConfig, "# mmrlhf train-reward --config"),
        ("train-reward.gpu.yaml", TrainRewardConfig, "# mmrlhf train-reward --config"),
        ("evaluate-reward-bench.yaml", EvaluateRewardBenchConfig, "# mmrlhf evaluate reward-bench"),
    ],
)
def test_yaml_loads_and_starts_with_its_command(name, cls, command):
    path = CONFIGS / name
    assert path.read_text().splitlines()[0].startswith(command)
    cfg = load_config(cls, path, ["run_dir=runs/x"])
    assert cfg.run_dir == "runs/x"


def test_gpu_profile_is_the_7b_recipe():
    cfg = load_config(TrainRewardConfig, CONFIGS / "train-reward.gpu.yaml")
    assert cfg.train.zero_stage == 3 and cfg.train.use_gpu and cfg.train.freeze_vision
    assert cfg.critique_source == "expanded" and cfg.loss.center == 0.01


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="critique_source"):
        TrainRewardConfig(critique_source="gpt")
    with pytest.raises(ValueError, match="mode"):
        EvaluateRewardBenchConfig(mode="sample")
