"""Every `mmrlhf <stage> key=value ...` line in the README and docs names real config
keys with values of the right type: the docs' examples parse as the CLI would parse them,
and their `--help` / `--print-config` lines run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mmrlhf_ray.core.cli import main, parse_stage_args
from mmrlhf_ray.core.config import load_config
from mmrlhf_ray.core.stages import get_stage

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = {("evaluate", "reward-bench"): "evaluate-reward-bench"}


def doc_commands() -> list[tuple[str, str]]:
    """(where, command line) for each documented `mmrlhf <stage> ...` call, continuations joined."""
    out = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if (
                re.match(r"^(\.venv/bin/)?mmrlhf [a-z][a-z-]*( |$)", line)
                and "<" not in line
                and "$" not in line
            ):
                out.append((f"{doc.name}:{n}", line))
    return out


@pytest.mark.parametrize("where,line", doc_commands(), ids=lambda v: v if ":" in str(v) else "")
def test_documented_command_parses(where, line, capsys):
    args = shlex.split(line, comments=True)[1:]
    if args == ["--help"]:
        assert main(args) == 0 and "stages:" in capsys.readouterr().out
        return
    stage, rest = args[0], args[1:]
    if rest[:1] == ["reward-bench"]:
        stage, rest = "evaluate-reward-bench", rest[1:]
    if "--help" in rest or "--print-config" in rest:  # runs as the CLI runs it
        with pytest.raises(SystemExit) as exit_info:
            parse_stage_args(stage, get_stage(stage).config_class, rest)
        assert exit_info.value.code == 0, capsys.readouterr().err
        assert "run_dir" in capsys.readouterr().out
        return
    config = ROOT / f"configs/{stage}.yaml"
    if "--config" in rest:
        i = rest.index("--config")
        config = ROOT / rest[i + 1]
        rest = rest[:i] + rest[i + 2 :]
    rest = [a for a in rest if a not in ("--print-config", "--debug", "--verbose")]
    load_config(get_stage(stage).config_class, config if config.exists() else None, rest)


def test_the_docs_have_commands_to_check():
    assert len(doc_commands()) > 30
