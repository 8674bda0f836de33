"""A set of steering signals: one mean 128-d activation per category and pathway."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steering.util.hashing import parts_digest
from steering.vocab import PATHWAYS

log = logging.getLogger(__name__)

SIGNAL_DIM = 128


@dataclass
class SignalSet:
    """Signals of one binning: ``vectors[category][pathway]`` is a (128,) float64 array."""

    binning_name: str
    vectors: dict[str, dict[str, np.ndarray]]
    counts: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source_path: Path | None = None
    # Kept so a loaded file saves back with the same keys: its generation_config and extra per-category keys.
    generation_config: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories that have a signal, in insertion order."""
        return tuple(self.vectors)

    def __contains__(self, category: object) -> bool:
        return category in self.vectors

    def __len__(self) -> int:
        return len(self.vectors)

    def vector(self, category: str, pathway: str) -> np.ndarray:
        if category not in self.vectors:
            raise KeyError(f"no signal for category {category!r}; available: {list(self.vectors)}")
        if pathway not in PATHWAYS:
            raise KeyError(f"unknown pathway {pathway!r}; expected one of {PATHWAYS}")
        return self.vectors[category][pathway]

    def matrix(self, pathway: str, categories: Sequence[str] | None = None) -> np.ndarray:
        """(K, 128) signals of ``pathway`` for ``categories`` (default: all, in order)."""
        cats = self.categories if categories is None else categories
        if not cats:
            return np.zeros((0, SIGNAL_DIM))
        return np.stack([self.vector(c, pathway) for c in cats])

    def grand_mean(self, pathway: str) -> np.ndarray:
        """Sample-weighted mean of the category signals; unweighted (with a warning) when counts are missing.

        A category with a signal but no positive ``samples_count`` (files written without counts
        read as 0) makes the weights meaningless, so then every category weighs the same.
        """
        mat = self.matrix(pathway)
        weights = np.array([self.counts.get(c, 0) for c in self.categories], dtype=np.float64)
        if not (weights > 0).all():
            missing = [c for c, w in zip(self.categories, weights) if w <= 0]
            log.warning(
                "signals %s: no samples_count for %s; the grand mean is unweighted",
                self.source_path or self.binning_name,
                ", ".join(missing),
            )
            weights = np.ones(len(mat))
        return (weights[:, None] * mat).sum(axis=0) / weights.sum()

    def fingerprint(self, length: int = 16) -> str:
        """Content hash of binning name, categories, vectors and counts (not metadata)."""
        return parts_digest(self._fingerprint_parts(), length)

    def _fingerprint_parts(self) -> Iterator[bytes | str]:
        yield self.binning_name
        for cat in sorted(self.vectors):
            yield cat
            yield str(int(self.counts.get(cat, 0)))
            for pathway in PATHWAYS:
                yield np.ascontiguousarray(self.vectors[cat][pathway], dtype=np.float64).tobytes()
