"""`mmrlhf <stage> ...`: one console entry point, one subcommand per pipeline stage.

The stages, their config classes and job modules are the registry's
(``mmrlhf_ray.stages``); each job (``jobs/<stage>.py``) has a ``main(argv) -> int`` and
runs the same under ``ray job submit``. This module only dispatches and offers the
shared argument parser, so it imports no Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from mmrlhf_ray.config import (
    ConfigError,
    absolute_local_paths,
    choices_of,
    config_to_dict,
    load_config,
)
from mmrlhf_ray.stages import BY_NAME, STAGES

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout, when run from one


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


def parse_stage_args(
    stage: str, config_cls: type[T], argv: list[str] | None, doc: str | None = None
) -> T:
    """Parse ``[--config PATH] [key=value ...]`` for ``stage`` into its config dataclass.

    The default config file is the stage's shipped ``configs/<stage>.yaml`` when it
    exists. ``--print-config`` prints the resolved config as YAML and exits.
    """
    registered = BY_NAME.get(stage)
    default_path = registered.config_path() if registered else None
    parser = argparse.ArgumentParser(
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
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(config_cls, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        parser.error(str(exc))
    absolute_local_paths(cfg)
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
        print(f"mmrlhf: unknown stage '{stage}'\n\n{_usage()}", file=sys.stderr)
        return 2
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    result: Any = BY_NAME[stage].job().main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
