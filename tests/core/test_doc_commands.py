"""Every `mmrlhf <stage> key=value ...` line in the README and docs names real config
keys with values of the right type: the docs' examples parse as the CLI would parse them."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from mmrlhf_ray.cli import job_module
from mmrlhf_ray.config import load_config

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
            if re.match(r"^(\.venv/bin/)?mmrlhf [a-z][a-z-]*( |$)", line) and "<" not in line and "$" not in line:
                out.append((f"{doc.name}:{n}", line))
    return out


def config_class(stage: str):
    module = importlib.import_module(job_module(stage))
    source = Path(module.__file__).read_text()
    name = re.search(rf'parse_stage_args\(\s*"{stage}",\s*(\w+)', source).group(1)
    return getattr(module, name)


@pytest.mark.parametrize("where,line", doc_commands(), ids=lambda v: v if ":" in str(v) else "")
def test_documented_command_parses(where, line):
    args = shlex.split(line, comments=True)[1:]
    stage, rest = args[0], args[1:]
    if rest[:1] == ["reward-bench"]:
        stage, rest = "evaluate-reward-bench", rest[1:]
    if rest[:1] in (["--help"], ["--print-config"]) or not rest and stage == "--help":
        return
    config = ROOT / f"configs/{stage}.yaml"
    if "--config" in rest:
        i = rest.index("--config")
        config = ROOT / rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
    rest = [a for a in rest if a not in ("--print-config", "--debug", "--verbose")]
    load_config(config_class(stage), config if config.exists() else None, rest)


def test_the_docs_have_commands_to_check():
    assert len(doc_commands()) > 30
