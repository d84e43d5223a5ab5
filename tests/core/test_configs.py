"""Every YAML in configs/ loads into its stage's config dataclass, and says how to run it."""

from pathlib import Path

import pytest

from mmrlhf_ray.core.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _stage_argv(path: Path) -> list[str]:
    stem = path.name.split(".")[0]
    if stem == "evaluate-reward-bench":
        return ["evaluate", "reward-bench"]
    return [stem]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_first_line_is_the_command(path, capsys):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# mmrlhf ") or first.startswith("# ray job submit"), first
    with pytest.raises(SystemExit) as exit_info:
        main([*_stage_argv(path), "--config", str(path), "--print-config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert "run_dir" in capsys.readouterr().out


def test_unknown_key_in_a_stage_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pairs", "no_such_key=1"])
    assert exit_info.value.code == 2
    assert "no_such_key" in capsys.readouterr().err
