"""`mmrlhf <stage> ...`: one console entry point, one subcommand per pipeline stage.

Each stage lives in ``jobs/<stage>.py`` (dashes become underscores) with a
``main(argv) -> int``; the same file runs under ``ray job submit``. This module only
dispatches and offers the shared argument parser, so it imports no Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from mmrlhf_ray import console, signals
from mmrlhf_ray.config import ConfigError, config_to_dict, load_config
from mmrlhf_ray.stage import StageInputError

T = TypeVar("T")

# (name, one-line summary), in pipeline order.
STAGES: list[tuple[str, str]] = [
    ("toyworld", "generate the synthetic shapes world: pool, annotated records, held-out benchmark"),
    ("build-models", "build the tiny offline models: BPE tokenizer and Qwen2-VL policy (CLIP: curate builds its own)"),
    ("sft", "SFT warm-up of the policy with Ray Train + DeepSpeed"),
    ("import", "read the official MM-RLHF release files into Parquet (with quarantine)"),
    ("curate", "CLIP-embed, k-means cluster and ratio-sample the pool (Ray Data + faiss)"),
    ("generate", "sample candidate responses with vLLM-backed Ray actors"),
    ("annotate", "annotate responses (shapes-world oracle, or import human labels)"),
    ("expand", "expand annotators' short reasons into critiques with an LLM (Table 7)"),
    ("pairs", "every pair of responses with differing rank (ties by the paper's rule)"),
    ("train-reward", "train the critique reward model (Ray Train + DeepSpeed)"),
    ("serve-reward", "serve the reward model over HTTP with Ray Serve"),
    ("score", "score every pair through the reward service: margin delta per pair"),
    ("ref-logps", "reference log-probs per response, once, by batch inference"),
    ("train-dpo", "MM-DPO with dynamic reward scaling (Ray Train + DeepSpeed)"),
    ("evaluate", "RewardBench ACC/ACC+, toy benchmark and safety metrics, with plots"),
    ("self-improve", "rounds of sample -> score -> pairs -> MM-DPO -> evaluate"),
    ("pipeline", "run every stage in one run directory, resuming where it stopped"),
]
_SUMMARY = dict(STAGES)
DEBUG_ENV, VERBOSE_ENV = "MMRLHF_DEBUG", "MMRLHF_VERBOSE"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _describe_fields(cls: type, prefix: str = "") -> list[str]:
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += _describe_fields(tp, prefix=f"{prefix}{f.name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        help_text = f.metadata.get("help", "")
        name = getattr(tp, "__name__", str(tp))
        lines.append(f"  {prefix}{f.name} ({name}, default {default!r}) {help_text}".rstrip())
    return lines


PATH_FIELD_SUFFIXES = ("run_dir", "path", "policy", "backbone", "_jsonl", "_root", "input")


def absolute_local_paths(cfg: Any) -> None:
    """Make ``run_dir`` and existing relative paths absolute, in place.

    Ray workers (Train, Data, Serve) do not run in the driver's directory, so a relative
    ``runs/demo`` must be resolved where the user typed it. URIs (``s3://``) stay.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not isinstance(value, str) or not value or "://" in value or os.path.isabs(value):
            continue
        if not f.name.endswith(PATH_FIELD_SUFFIXES) or "{" in value:
            continue
        if f.name == "run_dir" or os.path.exists(value):
            setattr(cfg, f.name, os.path.abspath(value))


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: ``mmrlhf <stage>: error: ... (see --help)``."""

    def error(self, message: str):  # type: ignore[override]
        fail(self.prog, f"{message} (`{self.prog} --help` lists the options and keys)")


def fail(prog: str, message: str):
    """Print ``<prog>: error: <message>`` as one line and exit 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_stage_args(
    stage: str, config_cls: type[T], argv: list[str] | None, doc: str | None = None
) -> T:
    """Parse ``[--config PATH] [key=value ...]`` for ``stage`` into its config dataclass.

    The default config file is ``configs/<stage>.yaml`` when it exists. ``--print-config``
    prints the resolved config as YAML and exits.
    """
    default_path = REPO_ROOT / "configs" / f"{stage}.yaml"
    parser = _Parser(
        prog=f"mmrlhf {stage}",
        description=(doc or _SUMMARY.get(stage, "")).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override any as key=value, nested as a.b=value):\n"
        + "\n".join(_describe_fields(config_cls)),
    )
    parser.add_argument(
        "--config",
        default=str(default_path) if default_path.exists() else None,
        help=f"YAML config (default: {default_path.relative_to(REPO_ROOT)} if present)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config")
    parser.add_argument("--debug", action="store_true", help="tracebacks for user errors too")
    parser.add_argument("--verbose", action="store_true", help="show Ray/vLLM/DeepSpeed logs live")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    if args.debug:
        os.environ[DEBUG_ENV] = "1"
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"
    try:
        cfg = load_config(config_cls, args.config, args.overrides)
    except ConfigError as exc:
        if args.debug:
            raise
        fail(parser.prog, f"{exc}; `{parser.prog} --help` lists the keys")
    absolute_local_paths(cfg)
    if isinstance(getattr(cfg, "run_dir", None), str):
        console.route(cfg.run_dir, stage)  # quiet console: worker logs to <stage>/logs/
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        sys.exit(0)
    return cfg


def _usage() -> str:
    width = max(len(n) for n, _ in STAGES)
    lines = ["usage: mmrlhf <stage> [--config PATH] [key=value ...]", "", "stages:"]
    lines += [f"  {name:<{width}}  {summary}" for name, summary in STAGES]
    lines += ["", "`mmrlhf <stage> --help` lists the stage's config keys and defaults."]
    return "\n".join(lines)


def job_module(stage: str) -> str:
    """The module of a stage's job script (``import`` is a keyword: jobs/import_release.py)."""
    return "jobs." + {"import": "import_release"}.get(stage, stage.replace("-", "_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in _SUMMARY:
        fail("mmrlhf", f"unknown stage '{stage}'; `mmrlhf --help` lists the stages")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if "--debug" in rest:
        os.environ[DEBUG_ENV] = "1"
    if "--verbose" in rest:
        os.environ[VERBOSE_ENV] = "1"
    if not os.environ.get(VERBOSE_ENV):
        console.enable()
    with signals.handled():
        try:
            module = importlib.import_module(job_module(stage))
            result: Any = module.main(rest)
        except BaseException as exc:
            signals.adopt(exc)  # SIGTERM while ray.init's own handler was in force
            message = None if signals.received() else user_error(exc)
            if message is None and signals.received() is None:
                raise
            if message is not None:
                if os.environ.get(DEBUG_ENV):
                    raise
                fail(f"mmrlhf {stage}", message)
    if signals.received() is not None:
        signals.exit_now(interrupted_message(stage, rest))
    return int(result or 0)


def user_error(exc: BaseException) -> str | None:
    """The one-line message of a user's mistake, or None for a bug (a traceback)."""
    if isinstance(exc, (ConfigError, StageInputError)):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) and exc.filename:
        return f"cannot read {exc.filename}: {exc.strerror}; check the path in the config"
    return None


def interrupted_message(stage: str, rest: list[str]) -> str:
    """Where to resume after Ctrl-C / SIGTERM (the pipeline prints its own, per stage)."""
    if stage == "pipeline":
        return ""
    command = " ".join(["mmrlhf", stage, *rest])
    return (f"mmrlhf {stage}: stopped by {signals.signal_name()}; re-run `{command}` to resume "
            f"(finished work is kept)")


if __name__ == "__main__":
    sys.exit(main())
