"""Which steering signal each sample gets (the ``category`` option)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from steering.model.lrm import PATHWAYS

CATEGORY_MODES = ("oracle", "predicted", "fixed", "shuffled", "random", "mean")
#: Modes whose choice of signal reads the ground-truth ratings of the evaluated samples.
ORACLE_MODES = frozenset({"oracle", "shuffled"})


@dataclass
class Assignment:
    """Per-sample signal choice: label (category name, "random", "mean" or ""), vectors and mask."""

    labels: np.ndarray  # (N,) str; "" where no signal
    vectors: dict[str, np.ndarray]  # pathway -> (N, 128) float32 (zeros where no signal)
    mask: np.ndarray  # (N,) bool: the sample is steered
    oracle: bool

    @property
    def coverage(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def _from_labels(labels: np.ndarray, table: Mapping[str, Mapping[str, np.ndarray]], oracle: bool) -> Assignment:
    n = len(labels)
    dim = len(next(iter(next(iter(table.values())).values())))
    mask = np.array([lab in table for lab in labels], dtype=bool)
    vectors = {p: np.zeros((n, dim), dtype=np.float32) for p in PATHWAYS}
    for i in np.flatnonzero(mask):
        for p in PATHWAYS:
            vectors[p][i] = table[labels[i]][p]
    labels = np.where(mask, labels, "")
    return Assignment(labels.astype(object), vectors, mask, oracle)


def assign_signals(
    mode: str,
    *,
    table: Mapping[str, Mapping[str, np.ndarray]],
    true_categories: np.ndarray,
    predicted_categories: np.ndarray,
    activations: Mapping[str, np.ndarray],
    weights: Mapping[str, int] | None = None,
    fixed_target: str | None = None,
    seed: int = 0,
) -> Assignment:
    """Choose each sample's signal.

    ``table``: category -> pathway -> (128,) signal. ``true_categories``/``predicted_categories``:
    (N,) names from the ratings and from the pass-1 predictions. ``activations``: pathway ->
    (N, 128) pass-1 activations of the evaluated samples (label-free; used by ``random``).
    ``weights``: sample counts per category (for the ``mean`` control).
    """
    if mode not in CATEGORY_MODES:
        raise ValueError(f"unknown category mode {mode!r}; expected one of {CATEGORY_MODES}")
    if not table:
        raise ValueError("no steering signals available (every category fell below min_samples?)")
    n = len(true_categories)
    rng = np.random.default_rng(seed)
    if mode == "oracle":
        return _from_labels(np.asarray(true_categories, dtype=object), table, oracle=True)
    if mode == "predicted":
        return _from_labels(np.asarray(predicted_categories, dtype=object), table, oracle=False)
    if mode == "fixed":
        if fixed_target not in table:
            raise ValueError(f"unknown fixed category {fixed_target!r}; signals exist for {sorted(table)}")
        return _from_labels(np.full(n, fixed_target, dtype=object), table, oracle=False)
    if mode == "shuffled":
        names = sorted(table)
        if len(names) < 2:
            raise ValueError("the shuffled control needs signals for at least two categories")
        labels = np.empty(n, dtype=object)
        for i, own in enumerate(true_categories):
            others = [c for c in names if c != own]
            labels[i] = others[rng.integers(len(others))]
        return _from_labels(labels, table, oracle=True)
    dim = activations[PATHWAYS[0]].shape[1]
    vectors: dict[str, np.ndarray] = {}
    if mode == "random":
        for p in PATHWAYS:
            acts = np.asarray(activations[p], dtype=np.float64)
            cov = np.cov(acts, rowvar=False) if len(acts) > 1 else np.zeros((dim, dim))
            vectors[p] = rng.multivariate_normal(acts.mean(axis=0), cov, size=n, method="eigh").astype(np.float32)
    else:  # mean: the count-weighted grand mean of the category signals
        names = sorted(table)
        w = np.array([float((weights or {}).get(c, 1)) for c in names])
        w = w / w.sum()
        for p in PATHWAYS:
            mean = np.sum([wi * np.asarray(table[c][p], dtype=np.float64) for wi, c in zip(w, names)], axis=0)
            vectors[p] = np.tile(mean.astype(np.float32), (n, 1))
    return Assignment(np.full(n, mode, dtype=object), vectors, np.ones(n, dtype=bool), oracle=False)
