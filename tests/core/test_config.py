from dataclasses import dataclass, field

import pytest

from mmrlhf_ray.config import ConfigError, load_config


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Outer:
    run_dir: str = "runs/demo"
    names: list[str] = field(default_factory=lambda: ["a"])
    train: Inner = field(default_factory=Inner)
    seed: int | None = None


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_dir: runs/x\ntrain:\n  steps: 3\n")
    cfg = load_config(Outer, path, ["train.lr=0.5", "names=[b, c]", "seed=7"])
    assert cfg.run_dir == "runs/x"
    assert cfg.train.steps == 3 and cfg.train.lr == 0.5
    assert cfg.names == ["b", "c"] and cfg.seed == 7


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(Outer, None, ["train.lrr=1"])
    path = tmp_path / "c.yaml"
    path.write_text("runn_dir: x\n")
    with pytest.raises(ConfigError, match="runn_dir"):
        load_config(Outer, path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(Outer, None, ["train.steps=many"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Outer, None, ["justakey"])
