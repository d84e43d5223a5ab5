"""Typed stage configs: one dataclass per stage, loaded from YAML plus dotted overrides.

A stage config is a (possibly nested) dataclass. ``load_config(Cls, path, overrides)``
reads the YAML, applies ``key.sub=value`` overrides (values parsed as YAML scalars),
and builds the dataclass, refusing unknown keys with an error that names the key.

Example::

    cfg = load_config(SftConfig, "configs/sft.yaml", ["train.lr=1e-4", "run_dir=runs/x"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def choices_of(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` annotation (None for other types)."""
    tp = _unwrap_optional(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def check_choices(cfg: Any) -> None:
    """Every ``Literal[...]`` field of the dataclass ``cfg`` holds one of its values.

    The one place choices are checked: configs loaded from YAML and configs built in
    code (``Choices.__post_init__``) both come here. Raises ``ConfigError`` naming the key.
    """
    for name, tp in typing.get_type_hints(type(cfg)).items():
        allowed = choices_of(tp)
        value = getattr(cfg, name, None)
        if allowed and value is not None and value not in allowed:
            raise ConfigError(
                f"config key '{name}': {value!r} is not one of {', '.join(map(str, allowed))}"
            )


class Choices:
    """Base of config dataclasses with ``Literal`` fields: checked after ``__init__``.
    A subclass with more checks of its own calls ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        check_choices(self)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML value to the annotated type, or raise naming ``key``."""
    if value is None:
        return None
    tp = _unwrap_optional(tp)
    allowed = choices_of(tp)
    if allowed:
        if value not in allowed:
            raise ConfigError(
                f"config key '{key}': {value!r} is not one of {', '.join(map(str, allowed))}"
            )
        return value
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError as exc:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from exc
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ConfigError(
            f"config key '{key}': expected {tp.__name__}, got {type(value).__name__} {value!r}"
        )
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected int, got bool {value!r}")
    return value


def _over_default(cls: type, name: str, value: Any) -> Any:
    """A nested section's given keys over the field's own default (its default_factory,
    e.g. DPO's train defaults), not over the nested class's: the dataclass stays the
    one source of defaults whether a YAML or ``a.b=value`` sets part of the section."""
    fld = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, dict) or fld.default_factory is dataclasses.MISSING:
        return value
    default = fld.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return {**config_to_dict(default), **value}


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' for {cls.__name__} "
            f"(known: {', '.join(sorted(names))})"
        )
    kwargs = {
        k: _coerce(_over_default(cls, k, v), hints[k], f"{prefix}{k}") for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    except ValueError as exc:  # a __post_init__ check: its message names the key
        raise ConfigError(str(exc)) from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for manifests and for writing back to YAML)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"override '{item}': bad value: {problem}") from exc
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{part}' is not a mapping")
        node[parts[-1]] = value
    return data


def load_config(
    cls: type[T],
    path: str | Path | Any | None = None,
    overrides: list[str] = (),
    values: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` from a YAML file (optional), top-level ``values`` set by the caller,
    then dotted overrides (the user's last word).

    Unknown keys raise ``ConfigError`` naming the dotted key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path)
    data.update(values or {})
    data = apply_overrides(data, list(overrides))
    try:
        return _build(cls, data)
    except ConfigError as exc:
        where = f" (config {path} and overrides)" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from exc


def read_yaml_mapping(path: Any) -> dict[str, Any]:
    """A YAML file's top-level mapping; ConfigError naming the file (and line) if not."""
    try:
        text = path.read_text() if hasattr(path, "read_text") else Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys")
    return loaded


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
