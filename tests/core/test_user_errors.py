"""A user's mistake is one line, `mmrlhf <stage>: error: <what, where, what to do>`, and
exit 2; tracebacks are for bugs (or `--debug`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmrlhf_ray.core.cli import main
from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.core.stage import StageDir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _loud_console(monkeypatch):
    """In-process calls keep pytest's streams (the quiet console would wrap them)."""
    monkeypatch.setenv("MMRLHF_VERBOSE", "1")


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return lines[0]


@pytest.fixture
def bad_yaml(tmp_path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: /tmp/x\nloss:\n  kind: mm_dpo\n  w: [1, 2\n")
    return str(path)


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["loss.kind=foo"],
            "mmrlhf train-dpo: error: config key 'loss.kind': 'foo' is not one of mm_dpo, dpo",
        ),
        (["loss.w=-1"], "mmrlhf train-dpo: error: loss.w and loss.k must be >= 0"),
        (
            ["loss.wrong=1"],
            "mmrlhf train-dpo: error: unknown config key 'loss.wrong' for LossConfig",
        ),
        (
            ["train.max_steps=abc"],
            "error: config key 'train.max_steps': expected int, got str 'abc'",
        ),
        (["train.lr=[1"], "error: override 'train.lr=[1': bad value: expected ',' or ']'"),
        (
            ["--config", "/nonexistent.yaml"],
            "error: cannot read config /nonexistent.yaml: No such file",
        ),
        (["--bogus"], "mmrlhf train-dpo: error: unrecognized arguments: --bogus"),
        (["run_dir=/nonexistent-run"], "error: no finished pair table in /nonexistent-run"),
    ],
)
def test_config_and_input_errors_are_one_line(capsys, args, expected):
    line = _error_line(capsys, ["train-dpo", *args])
    assert expected in line
    assert "--help" in line or "run `mmrlhf pairs" in line  # what to do


def test_malformed_yaml_names_file_and_line(capsys, bad_yaml):
    line = _error_line(capsys, ["train-dpo", "--config", bad_yaml])
    assert line.startswith(f"mmrlhf train-dpo: error: {bad_yaml}:5:1: malformed YAML: expected")


def test_missing_upstream_stage_says_what_to_run(capsys, tmp_path):
    line = _error_line(capsys, ["pairs", f"run_dir={tmp_path}"])
    assert line == (
        f"mmrlhf pairs: error: stage 'annotate' has not finished in {tmp_path}: "
        f"run `mmrlhf annotate run_dir={tmp_path}` first"
    )


def test_stale_upstream_stage_says_what_to_rerun(capsys, tmp_path):
    up = StageDir(str(tmp_path), "annotate")
    up.begin({"a": 1})
    up.finish(0, 0, 0)
    down = StageDir(str(tmp_path), "generate")
    down.begin({"b": 1})
    down.finish(0, 0, 0)
    # annotate was made from another generate: a re-made generate makes it stale
    manifest = up.read_manifest()
    up.write_manifest({**manifest, "inputs": {"generate": "an-older-fingerprint"}})
    line = _error_line(capsys, ["pairs", f"run_dir={tmp_path}"])
    assert "stage 'annotate'" in line and "is stale: generate changed" in line
    assert f"re-run `mmrlhf annotate run_dir={tmp_path}` first" in line


def test_unknown_stage(capsys):
    line = _error_line(capsys, ["nosuch"])
    assert line == "mmrlhf: error: unknown stage 'nosuch'; `mmrlhf --help` lists the stages"


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("MMRLHF_DEBUG", "")  # --debug sets it: restored after the test
    with pytest.raises(ConfigError, match="loss.kind"):
        main(["train-dpo", "--debug", "loss.kind=foo"])


def test_a_real_process_prints_no_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mmrlhf_ray.core.cli", "pairs", f"run_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"mmrlhf pairs: error: stage 'annotate' has not finished in {tmp_path}: "
        f"run `mmrlhf annotate run_dir={tmp_path}` first"
    ]
    assert out.stdout == ""


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["generate", "models=[]"],
            "mmrlhf generate: error: generate: no models configured (config key 'models')",
        ),
        (
            ["generate", "models=[{name: a, kind: transformers}]"],
            "mmrlhf generate: error: model 'a': path is required for kind 'transformers'",
        ),
        (
            ["expand", "expander.kind=simulated"],
            "mmrlhf expand: error: expand: expander.kind: the expander must be a model "
            "(vllm | transformers | auto), got 'simulated'",
        ),
        (
            ["score", "via=grpc"],
            "mmrlhf score: error: config key 'via': 'grpc' is not one of http, handle",
        ),
    ],
)
def test_a_run_time_config_mistake_is_one_line(capsys, tmp_path, argv, expected):
    line = _error_line(capsys, [*argv, f"run_dir={tmp_path}"])
    assert line.startswith(expected), line


def test_score_without_a_service_says_what_to_run(capsys, tmp_path):
    from mmrlhf_ray.data.schemas import to_table

    pairs = StageDir(str(tmp_path), "pairs")
    pairs.begin({"test": True})
    pairs.write_part("part-00000", to_table([], "pair"))
    pairs.finish(0, 0, 0)
    line = _error_line(capsys, ["score", f"run_dir={tmp_path}"])
    assert line == (
        "mmrlhf score: error: score: no url= given and no serve-reward manifest with a URL: "
        f"run `mmrlhf serve-reward run_dir={tmp_path} detach=true` first"
    )
