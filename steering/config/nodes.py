"""OmegaConf value nodes that check a range or a set of choices whenever a value is set.

A structured-config field whose default is one of these nodes keeps it through Hydra's merges and
command-line overrides, so ``batch_size=-1`` or ``precision=fp8`` stops at composition with
OmegaConf's own message naming the key (``full_key: batch_size``), like a type error does.
Use them through :func:`integer`, :func:`number` and :func:`choice` in a dataclass field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import field
from typing import Any

from omegaconf import MISSING, FloatNode, IntegerNode, StringNode, ValidationError


class _Checked:
    """Mixin: run ``_check`` on every converted value; keep the node class (and its bounds) on deep copy."""

    _bounds: dict[str, Any]

    def _validate_and_convert_impl(self, value: Any) -> Any:
        converted = super()._validate_and_convert_impl(value)  # type: ignore[misc]
        self._check(converted)
        return converted

    def _check(self, value: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __deepcopy__(self, memo: dict) -> Any:
        res = type(self)(MISSING, **self._bounds)
        self._deepcopy_impl(res, memo)  # type: ignore[attr-defined]
        return res


def _check_range(value: float, bounds: dict[str, Any]) -> None:
    ge, gt, le, lt = bounds.get("ge"), bounds.get("gt"), bounds.get("le"), bounds.get("lt")
    if bounds.get("finite", True) and not math.isfinite(value):
        raise ValidationError(f"Value '{value}' is not a finite number")
    for limit, ok, word in ((ge, lambda: value >= ge, ">="), (gt, lambda: value > gt, ">")):
        if limit is not None and not ok():
            raise ValidationError(f"Value '{value}' must be {word} {limit}")
    for limit, ok, word in ((le, lambda: value <= le, "<="), (lt, lambda: value < lt, "<")):
        if limit is not None and not ok():
            raise ValidationError(f"Value '{value}' must be {word} {limit}")


class BoundedInt(_Checked, IntegerNode):
    """An integer within optional bounds ``ge``/``gt``/``le``/``lt``."""

    def __init__(self, value: Any = None, *, ge=None, gt=None, le=None, lt=None, is_optional=True, **kw) -> None:
        self._bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "is_optional": is_optional}
        super().__init__(value=value, is_optional=is_optional, **kw)

    def _check(self, value: Any) -> None:
        if value is not None:
            _check_range(value, self._bounds)


class BoundedFloat(_Checked, FloatNode):
    """A finite float (unless ``finite=False``) within optional bounds."""

    def __init__(
        self, value: Any = None, *, ge=None, gt=None, le=None, lt=None, finite=True, is_optional=True, **kw
    ) -> None:
        self._bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "finite": finite, "is_optional": is_optional}
        super().__init__(value=value, is_optional=is_optional, **kw)

    def _check(self, value: Any) -> None:
        if value is not None:
            _check_range(value, self._bounds)


class Choice(_Checked, StringNode):
    """A string that must be one of ``choices``."""

    def __init__(self, value: Any = None, *, choices: Sequence[str] = (), is_optional=True, **kw) -> None:
        self._bounds = {"choices": tuple(choices), "is_optional": is_optional}
        super().__init__(value=value, is_optional=is_optional, **kw)

    def _check(self, value: Any) -> None:
        choices = self._bounds["choices"]
        if value is not None and value not in choices:
            raise ValidationError(f"Value '{value}' is not one of: {', '.join(choices)}")


def integer(default: Any, *, ge=None, gt=None, le=None, lt=None) -> Any:
    """A dataclass field holding a :class:`BoundedInt` (``None`` default: optional)."""
    optional = default is None
    return field(default_factory=lambda: BoundedInt(default, ge=ge, gt=gt, le=le, lt=lt, is_optional=optional))


def number(default: Any, *, ge=None, gt=None, le=None, lt=None, finite: bool = True) -> Any:
    """A dataclass field holding a :class:`BoundedFloat` (finite unless ``finite=False``)."""
    optional = default is None
    return field(
        default_factory=lambda: BoundedFloat(default, ge=ge, gt=gt, le=le, lt=lt, finite=finite, is_optional=optional)
    )


def choice(default: Any, choices: Sequence[str]) -> Any:
    """A dataclass field holding a :class:`Choice` among ``choices``."""
    optional = default is None
    return field(default_factory=lambda: Choice(default, choices=tuple(choices), is_optional=optional))
