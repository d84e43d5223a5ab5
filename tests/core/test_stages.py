"""The stage registry (mmrlhf_ray/core/stages.py) is complete: every stage has a config class,
a job with `main`, a script for `ray job submit`, a section in the guide, and `--help`
shows the defaults a run really uses (what the shipped YAML resolves to)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import ConfigError, load_config
from mmrlhf_ray.core.stages import BY_NAME, PIPELINE_STAGES, STAGES, config_dir, get_stage
from mmrlhf_ray.flows.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs/GUIDE.md").read_text()


def _flat(cfg, prefix=""):
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flat(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_has_config_job_script_and_doc_section(stage):
    cls = stage.config_class
    assert dataclasses.is_dataclass(cls) and "run_dir" in {f.name for f in dataclasses.fields(cls)}
    assert (ROOT / stage.script).is_file(), stage.script
    assert callable(stage.job().main)
    heading = "### evaluate reward-bench" if stage.name == "evaluate-reward-bench" else None
    assert (heading or f"## {stage.name}") + "\n" in GUIDE, f"no section for {stage.name}"
    assert all(i in BY_NAME for i in stage.inputs), stage.inputs


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_help_shows_the_defaults_a_run_uses(stage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_stage_args(stage.name, stage.config_class, ["--help"])
    assert exit_info.value.code == 0
    lines = {
        ln.split()[0]: ln
        for ln in capsys.readouterr().out.splitlines()
        if ln.startswith("  ") and " (" in ln and not ln.lstrip().startswith("-")
    }
    try:
        resolved = load_config(stage.config_class, stage.config_path())
    except (ConfigError, ValueError):  # the shipped YAML needs the user's input
        resolved = stage.config_class() if stage.config_path() is None else None
    if resolved is None:
        pytest.skip(f"{stage.name}: shipped config needs input")
    for key, value in _flat(resolved).items():
        assert f"default {value!r}" in lines[key], (key, value, lines[key])


def test_configs_ship_with_the_package_and_pipeline_order_comes_from_the_registry():
    assert (config_dir() / "sft.yaml").is_file()
    assert get_stage("sft").config_path() is not None
    assert get_stage("toyworld/pool").name == "toyworld"
    assert PIPELINE_STAGES[:3] == ["toyworld", "build-models", "sft"]
    assert "import" in PIPELINE_STAGES and "import" not in PipelineConfig().stages
    assert "pipeline" not in PIPELINE_STAGES and "self-improve" not in PIPELINE_STAGES
    with pytest.raises(ValueError, match="unknown stage"):
        PipelineConfig(stages=["toyworld", "no-such-stage"])


def test_listing_the_stages_imports_no_torch():
    code = "import sys, mmrlhf_ray.core.cli as c; c._usage(); print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"
