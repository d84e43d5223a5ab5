"""`mmrlhf <stage> ...`: one console entry point, one subcommand per pipeline stage.

The stages, their config classes and job modules are the registry's
(``mmrlhf_ray.core.stages``); each job (``jobs/<stage>.py``) has a ``main(argv) -> int`` and
runs the same under ``ray job submit``. This module only dispatches and offers the
shared argument parser, so it imports no Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from mmrlhf_ray.core import console, signals
from mmrlhf_ray.core.config import (
    ConfigError,
    absolute_local_paths,
    choices_of,
    config_to_dict,
    load_config,
)
from mmrlhf_ray.core.stage import StageInputError
from mmrlhf_ray.core.stages import BY_NAME, STAGES

T = TypeVar("T")

DEBUG_ENV, VERBOSE_ENV = "MMRLHF_DEBUG", "MMRLHF_VERBOSE"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when run from one


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def describe_config(cls: type, values: Any = None, source: str = "", prefix: str = "") -> list[str]:
    """One line per config key: type, the default a run really uses, help.

    ``values``: the config the stage's shipped YAML (``source``) resolves to; a key it
    sets to something else than the dataclass shows both.
    """
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(values, f.name) if values is not None else None
        if dataclasses.is_dataclass(tp):
            lines += describe_config(tp, value, source, prefix=f"{prefix}{f.name}.")
            continue
        default = _field_default(f)
        shown = f"default {default!r}"
        if values is not None and value != default:
            shown = f"default {value!r} from {source}; {default!r} in code"
        help_text = f.metadata.get("help", "")
        allowed = choices_of(tp)
        name = "|".join(map(str, allowed)) if allowed else getattr(tp, "__name__", str(tp))
        lines.append(f"  {prefix}{f.name} ({name}, {shown}) {help_text}".rstrip())
    return lines


def _shipped_defaults(config_cls: type, path: Any) -> Any:
    """The config the shipped YAML resolves to (None when there is none or it needs input)."""
    if path is None:
        return None
    try:
        return load_config(config_cls, path)
    except (ConfigError, ValueError):
        return None


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

    The default config file is the stage's shipped ``configs/<stage>.yaml`` when it
    exists. ``--print-config`` prints the resolved config as YAML and exits.
    """
    registered = BY_NAME.get(stage)
    default_path = registered.config_path() if registered else None
    parser = _Parser(
        prog=f"mmrlhf {stage}",
        description=(doc or (registered.summary if registered else "")).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override any as key=value, nested as a.b=value):\n"
        + "\n".join(
            describe_config(
                config_cls, _shipped_defaults(config_cls, default_path), f"configs/{stage}.yaml"
            )
        ),
    )
    parser.add_argument(
        "--config",
        default=None if default_path is None else str(default_path),
        help=f"YAML config (default: configs/{stage}.yaml if present)",
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
    shown = [s for s in STAGES if s.name != "evaluate-reward-bench"]  # `evaluate reward-bench`
    width = max(len(s.name) for s in shown)
    lines = ["usage: mmrlhf <stage> [--config PATH] [key=value ...]", "", "stages:"]
    lines += [f"  {s.name:<{width}}  {s.summary}" for s in shown]
    lines += ["", "`mmrlhf <stage> --help` lists the stage's config keys and defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in BY_NAME:
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
            result: Any = BY_NAME[stage].job().main(rest)
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
    return (
        f"mmrlhf {stage}: stopped by {signals.signal_name()}; re-run `{command}` to resume "
        f"(finished work is kept)"
    )


if __name__ == "__main__":
    sys.exit(main())
