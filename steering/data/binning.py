"""Emotion categories from (valence, arousal) values (docs/formats.md, "Signal file").

A scheme is a list of increasing thresholds and bin names per axis; a value equal to a threshold
falls in the lower bin. A category is named ``{valence}_{arousal}``, e.g. ``negative_strong``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from steering.config.fields import parse
from steering.config.schema import BinningConf
from steering.errors import SteeringError


class BinningError(SteeringError, ValueError):
    """An invalid binning scheme or an unknown category name."""


def _check_axis(axis: str, thresholds: Sequence[float], names: Sequence[str], where: str) -> None:
    if len(names) != len(thresholds) + 1:
        raise BinningError(
            f"{where}: {axis} needs one more name than thresholds, got {len(thresholds)} thresholds "
            f"{list(thresholds)} and {len(names)} names {list(names)}"
        )
    if not all(np.isfinite(thresholds)):
        raise BinningError(f"{where}: {axis} thresholds must be finite numbers, got {list(thresholds)}")
    if any(b <= a for a, b in itertools.pairwise(thresholds)):
        raise BinningError(f"{where}: {axis} thresholds must be strictly increasing, got {list(thresholds)}")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise BinningError(f"{where}: {axis} names must be distinct non-empty strings, got {list(names)}")


@dataclass(frozen=True)
class Binning:
    """A valence x arousal binning scheme."""

    name: str
    valence_thresholds: tuple[float, ...]
    valence_names: tuple[str, ...]
    arousal_thresholds: tuple[float, ...]
    arousal_names: tuple[str, ...]
    min_samples: int = 15
    # Alternative spellings of bin or category names, e.g. {"middle": "moderate"} (older 25-bin files).
    aliases: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        where = f"binning {self.name!r}"
        object.__setattr__(self, "valence_thresholds", tuple(float(t) for t in self.valence_thresholds))
        object.__setattr__(self, "arousal_thresholds", tuple(float(t) for t in self.arousal_thresholds))
        object.__setattr__(self, "valence_names", tuple(self.valence_names))
        object.__setattr__(self, "arousal_names", tuple(self.arousal_names))
        object.__setattr__(self, "aliases", {str(k): str(v) for k, v in dict(self.aliases).items()})
        _check_axis("valence", self.valence_thresholds, self.valence_names, where)
        _check_axis("arousal", self.arousal_thresholds, self.arousal_names, where)
        if not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise BinningError(f"{where}: min_samples must be a positive integer, got {self.min_samples!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_conf(cls, conf: BinningConf) -> Binning:
        """From the ``binning`` section of a config (``conf/binning/*.yaml``, already checked by its schema)."""
        return cls(
            name=str(conf.name),
            valence_thresholds=tuple(conf.valence.thresholds),
            valence_names=tuple(conf.valence.names),
            arousal_thresholds=tuple(conf.arousal.thresholds),
            arousal_names=tuple(conf.arousal.names),
            min_samples=int(conf.min_samples),
            aliases=dict(conf.aliases),
        )

    @classmethod
    def load(cls, path: str | Path) -> Binning:
        """From a YAML file of the ``conf/binning`` shape; the name defaults to the file's stem.

        The file is checked against :class:`~steering.config.schema.BinningConf`: a missing or
        mistyped key raises a BinningError naming the file and the key.
        """
        path = Path(path)
        if not path.is_file():
            raise BinningError(f"{path}: binning file not found")
        try:  # safe loading: a tag such as !!python/object is an error here, never code that runs
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise BinningError(f"{path}: not a readable YAML file ({' '.join(str(exc).split())})") from None
        except RecursionError:
            raise BinningError(f"{path}: YAML nested too deeply to read") from None
        if not isinstance(data, Mapping):
            raise BinningError(f"{path}: expected a mapping at the top level")
        label = data.get("name") or path.stem
        try:
            conf = parse(BinningConf, {**data, "name": label})
        except ValueError as exc:
            raise BinningError(f"{path}: binning {label!r}: {exc}") from None
        try:
            return cls.from_conf(conf)
        except BinningError as exc:
            raise BinningError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The ``conf/binning`` shape, as plain data (hashed into signal provenance and cache keys)."""
        return {
            "name": self.name,
            "min_samples": self.min_samples,
            "valence": {"thresholds": list(self.valence_thresholds), "names": list(self.valence_names)},
            "arousal": {"thresholds": list(self.arousal_thresholds), "names": list(self.arousal_names)},
            "aliases": dict(self.aliases),
        }

    # ------------------------------------------------------------------ categories
    @property
    def categories(self) -> tuple[str, ...]:
        """All category names, valence-major (in bin order)."""
        return tuple(f"{v}_{a}" for v in self.valence_names for a in self.arousal_names)

    @staticmethod
    def _bin(values: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise BinningError("cannot categorise NaN/inf values")
        # Compare in the values' own precision: a float32 rating of -0.3 is on the boundary.
        return np.searchsorted(np.asarray(thresholds, dtype=values.dtype), values, side="left")

    def categorize(self, valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
        """Category name of each (valence, arousal) pair; value <= threshold falls in the lower bin."""
        valence, arousal = np.atleast_1d(np.asarray(valence)), np.atleast_1d(np.asarray(arousal))
        if valence.shape != arousal.shape:
            raise ValueError(f"valence and arousal must have the same shape, got {valence.shape} and {arousal.shape}")
        vi = self._bin(valence, self.valence_thresholds)
        ai = self._bin(arousal, self.arousal_thresholds)
        return np.asarray(self.categories)[vi * len(self.arousal_names) + ai]

    def _axis_name(self, part: str, names: tuple[str, ...]) -> str | None:
        part = self.aliases.get(part, part)
        return part if part in names else None

    def canonical(self, name: str) -> str:
        """The scheme's spelling of a category name, applying aliases (``neutral_middle`` -> ``neutral_moderate``)."""
        name = self.aliases.get(name, name)
        if name in self.categories:
            return name
        parts = name.split("_")
        for cut in range(1, len(parts)):
            v = self._axis_name("_".join(parts[:cut]), self.valence_names)
            a = self._axis_name("_".join(parts[cut:]), self.arousal_names)
            if v is not None and a is not None:
                return f"{v}_{a}"
        raise BinningError(f"unknown category {name!r} for binning {self.name!r}; known: {list(self.categories)}")

    def is_category(self, name: str) -> bool:
        try:
            self.canonical(name)
        except BinningError:
            return False
        return True
