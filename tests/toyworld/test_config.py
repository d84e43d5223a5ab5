"""The stage's YAML loads into ToyWorldConfig; bad values fail naming the key; bad rows too."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrlhf_ray.core.config import ConfigError, load_config
from mmrlhf_ray.toyworld import judge, oracle_annotate
from mmrlhf_ray.toyworld.config import ToyWorldConfig

YAML = Path(__file__).resolve().parents[2] / "configs" / "toyworld.yaml"


def test_yaml_loads_and_first_line_is_the_command():
    assert (
        YAML.read_text()
        .splitlines()[0]
        .startswith("# mmrlhf toyworld --config configs/toyworld.yaml")
    )
    cfg = load_config(ToyWorldConfig, YAML, ["pool_size=10", "mix.mcq=0.5"])
    assert (cfg.pool_size, cfg.benchmark_size, cfg.mix.mcq, cfg.mix.short) == (10, 200, 0.5, 0.76)
    assert cfg == load_config(ToyWorldConfig, YAML, ["pool_size=10", "mix.mcq=0.5"])


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="mix.colour"):
        load_config(ToyWorldConfig, YAML, ["mix.colour=1"])
    with pytest.raises(ConfigError, match="rows_per_shard"):
        load_config(ToyWorldConfig, YAML, ["rows_per_shard=0"])
    with pytest.raises(ConfigError, match="record_models: 'gpt'"):
        load_config(ToyWorldConfig, YAML, ["record_models=[gpt]"])
    with pytest.raises(ConfigError, match="mix.long"):
        load_config(ToyWorldConfig, YAML, ["mix.long=-1"])


def test_bad_rows_fail_naming_the_field(rows):
    broken = dict(rows["color"], ground_truth="{not json")
    with pytest.raises(ValueError, match="q-color: ground_truth: not JSON"):
        judge(broken, "The circle is red.")
    with pytest.raises(ValueError, match="ground_truth: missing"):
        judge(dict(rows["color"], ground_truth=None), "red")
    with pytest.raises(ValueError, match="responses"):
        oracle_annotate(rows["color"], [])
