"""Config fields that carry their own checks: a default plus the range or the choices it must keep.

Plain Python (no OmegaConf, no torch), so the core can import the config dataclasses and take
them as arguments. The bounds live in the field's metadata and are written once: a dataclass that
derives from :class:`Checked` applies them when a library user builds it by hand, and the Hydra
side (``steering.config.hydra``) turns the same metadata into validating nodes, so a bad value on
the command line stops at composition with Hydra's message naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field, fields
from typing import Any, TypeVar

T = TypeVar("T")

#: OmegaConf's marker of a mandatory value (a plain string, so this module needs no OmegaConf).
MISSING: Any = "???"
#: Metadata key of a checked field.
CHECK = "steering_check"


def integer(default: Any, *, ge: float | None = None, gt: float | None = None, le=None, lt=None) -> Any:
    """An int field within optional bounds (``None`` default: optional)."""
    return field(default=default, metadata={CHECK: {"kind": "int", "ge": ge, "gt": gt, "le": le, "lt": lt}})


def number(default: Any, *, ge=None, gt=None, le=None, lt=None, finite: bool = True) -> Any:
    """A float field, finite unless ``finite=False``, within optional bounds."""
    bounds = {"kind": "float", "ge": ge, "gt": gt, "le": le, "lt": lt, "finite": finite}
    return field(default=default, metadata={CHECK: bounds})


def choice(default: Any, choices: Sequence[str]) -> Any:
    """A string field that must be one of ``choices``."""
    return field(default=default, metadata={CHECK: {"kind": "choice", "choices": tuple(choices)}})


def problem(check: dict[str, Any], value: Any) -> str | None:
    """What is wrong with ``value`` under ``check`` (OmegaConf's wording), or None."""
    if value is None or value == MISSING:
        return None
    if check["kind"] == "choice":
        choices = check["choices"]
        return None if value in choices else f"Value '{value}' is not one of: {', '.join(choices)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"Value '{value}' is not a number"
    if check.get("finite", True) and not math.isfinite(value):
        return f"Value '{value}' is not a finite number"
    for word, limit, ok in (
        (">=", check.get("ge"), lambda lim: value >= lim),
        (">", check.get("gt"), lambda lim: value > lim),
        ("<=", check.get("le"), lambda lim: value <= lim),
        ("<", check.get("lt"), lambda lim: value < lim),
    ):
        if limit is not None and not ok(limit):
            return f"Value '{value}' must be {word} {limit}"
    return None


class Checked:
    """Base of the config dataclasses: a value out of its field's bounds raises ``ValueError`` naming it."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check = f.metadata.get(CHECK)
            found = problem(check, getattr(self, f.name)) if check else None
            if found:
                raise ValueError(f"{type(self).__name__}.{f.name}: {found}")


_KINDS = {int: "Integer", float: "Float", str: "String", bool: "Boolean"}


def _scalar(kind: type, value: Any, where: str) -> Any:
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool or isinstance(value, bool) or (kind is int and float(value) != int(value)):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: Value '{value}' of type '{type(value).__name__}' could not be converted to {_KINDS[kind]}"
        ) from None


def _value(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None or hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return parse(hint, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(hint, value, where) if hint in _KINDS else value


def parse(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """A config dataclass from plain data (a user's YAML file), in OmegaConf's words on a problem.

    For files the library reads itself (a binning scheme); the apps' configs go through Hydra.
    A problem raises ``ValueError("<key>: <problem>")``.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in known:
            raise ValueError(f"{prefix}{key}: Key '{key}' not in '{cls.__name__}'")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default or f.default == MISSING:
                raise ValueError(f"{prefix}{name}: Missing mandatory value")
            continue
        values[name] = _value(hints[name], data[name], f"{prefix}{name}")
        found = problem(f.metadata[CHECK], values[name]) if CHECK in f.metadata else None
        if found:
            raise ValueError(f"{prefix}{name}: {found}")
    return cls(**values)
