"""Config fields that carry their own checks: a default plus the range or the choices it must keep.

Plain Python (no OmegaConf, no torch), so the core can import the config dataclasses and take
them as arguments. The bounds live in the field's metadata and are written once: a dataclass that
derives from :class:`Checked` applies them when a library user builds it by hand, and the Hydra
side (``steering.config.hydra``) turns the same metadata into validating nodes, so a bad value on
the command line stops at composition with Hydra's message naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import field, fields
from typing import Any

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
