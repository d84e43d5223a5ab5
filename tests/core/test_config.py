from dataclasses import dataclass, field

import pytest

from mmrlhf_ray.core.config import ConfigError, load_config


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


def test_stage_args_resolve_local_paths_where_the_user_typed_them(tmp_path, monkeypatch):
    """Ray workers run elsewhere: a relative run_dir (and an existing relative model path)
    becomes absolute at parse time; URIs and missing paths stay as typed."""
    from mmrlhf_ray.core.cli import parse_stage_args

    @dataclass
    class StageCfg:
        run_dir: str = "runs/demo"
        policy: str = ""
        model_path: str = ""
        name: str = "models"

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    cfg = parse_stage_args("x", StageCfg, ["policy=models", "model_path=nowhere"])
    assert cfg.run_dir == str(tmp_path / "runs/demo") and cfg.policy == str(tmp_path / "models")
    assert cfg.model_path == "nowhere" and cfg.name == "models"
    assert parse_stage_args("x", StageCfg, ["run_dir=s3://b/r"]).run_dir == "s3://b/r"
