"""Which steering signal each sample gets (the ``category`` option), one or several draws."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from steering.model.lrm import PATHWAYS

CATEGORY_MODES = ("oracle", "predicted", "fixed", "shuffled", "random", "mean")
#: Modes whose choice of signal reads the ground-truth ratings of the evaluated samples.
ORACLE_MODES = frozenset({"oracle", "shuffled"})
#: Controls whose signal choice is random: run ``category.draws`` draws in one run.
MULTI_DRAW_MODES = frozenset({"shuffled", "random"})
#: Where ``predicted`` takes each sample's category from: the model's final (baseline) prediction or pass 1.
CATEGORY_SOURCES = ("final", "pass1")


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

    def category_accuracy(self, true_categories: np.ndarray) -> float:
        """Share of ALL evaluated samples that get the signal of their own true category.

        Unsteered samples count as wrong, so ``oracle`` scores its coverage; ``random`` and ``mean``
        (no category) score 0; ``shuffled`` scores the share of samples its permutation left in place.
        """
        if not self.mask.size:
            return 0.0
        own = np.asarray(true_categories, dtype=object) == self.labels
        return float(np.mean(own & self.mask))


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


def shuffled_labels(true_categories: np.ndarray, covered: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of the covered samples' own labels, with as few samples keeping their own as swaps allow.

    Only samples whose category has a signal (``covered``) take part, so coverage and the multiset
    of signals equal the oracle's. After a uniform permutation, each sample whose new label is its
    own is swapped with a randomly chosen sample ``j`` such that neither keeps its own label after
    the swap (``label[j] != own[i]`` and ``own[j] != own[i]``); swaps never create new fixed points
    and keep the multiset. When no such ``j`` exists (a category holding more than half the samples
    cannot be fully deranged) the sample keeps its own signal; ``category_accuracy`` reports that share.
    """
    own = np.asarray(true_categories, dtype=object)
    labels = np.full(len(own), "", dtype=object)
    idx = np.flatnonzero(covered)
    if idx.size == 0:
        return labels
    perm = own[idx][rng.permutation(idx.size)]
    mine = own[idx]
    for i in rng.permutation(np.flatnonzero(perm == mine)):
        if perm[i] != mine[i]:  # already moved by an earlier swap
            continue
        candidates = np.flatnonzero((perm != mine[i]) & (mine != mine[i]))
        if candidates.size:
            j = candidates[rng.integers(candidates.size)]
            perm[i], perm[j] = perm[j], perm[i]
    labels[idx] = perm
    return labels


@dataclass(frozen=True)
class GaussianReference:
    """N(mean, cov) of reference pass-1 activations per pathway, factored once for many draws.

    Draws are clipped at 0: real 128-d activations are ReLU outputs (>= 0). Clipping keeps exact
    zeros where units are silent and raises the mean of dimensions near 0 (a rectified Gaussian).
    """

    mean: dict[str, np.ndarray]  # pathway -> (D,)
    factor: dict[str, np.ndarray]  # pathway -> (D, D) with factor @ factor.T = cov

    @classmethod
    def from_activations(cls, activations: Mapping[str, np.ndarray]) -> GaussianReference:
        mean, factor = {}, {}
        for p in PATHWAYS:
            acts = np.asarray(activations[p], dtype=np.float64)
            if len(acts) < 2:
                raise ValueError("the random control needs the activations of at least two reference samples")
            values, vectors = np.linalg.eigh(np.cov(acts, rowvar=False))
            mean[p] = acts.mean(axis=0)
            factor[p] = vectors * np.sqrt(np.clip(values, 0.0, None))
        return cls(mean, factor)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` clipped draws per pathway, float32."""
        out = {}
        for p in PATHWAYS:
            z = rng.standard_normal((n, len(self.mean[p])))
            out[p] = np.maximum(z @ self.factor[p].T + self.mean[p], 0.0).astype(np.float32)
        return out


def assign_signals(
    mode: str,
    *,
    table: Mapping[str, Mapping[str, np.ndarray]],
    true_categories: np.ndarray,
    predicted_categories: np.ndarray,
    reference: GaussianReference | None = None,
    grand_mean: Mapping[str, np.ndarray] | None = None,
    fixed_target: str | None = None,
    seed: int | np.random.SeedSequence = 0,
) -> Assignment:
    """Choose each sample's signal (one draw).

    ``table``: category -> pathway -> (128,) signal. ``true_categories``/``predicted_categories``:
    (N,) names from the ratings and from the model's predictions. ``reference``: the Gaussian of
    the pass-1 activations of the samples the signals come from, never the evaluated ones
    (``random`` draws from it, clipped at 0).
    ``grand_mean``: pathway -> (128,) mean signal (``mean``; see ``SignalSet.grand_mean``).
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
        if len(table) < 2:
            raise ValueError("the shuffled control needs signals for at least two categories")
        own = np.asarray(true_categories, dtype=object)
        covered = np.array([c in table for c in own], dtype=bool)
        return _from_labels(shuffled_labels(own, covered, rng), table, oracle=True)
    if mode == "random":
        if reference is None:
            raise ValueError("the random control needs reference activations")
        vectors = reference.sample(n, rng)
    else:  # mean
        if grand_mean is None:
            raise ValueError("the mean control needs the grand mean signal")
        vectors = {p: np.tile(np.asarray(grand_mean[p], dtype=np.float32), (n, 1)) for p in PATHWAYS}
    return Assignment(np.full(n, mode, dtype=object), vectors, np.ones(n, dtype=bool), oracle=False)


def assign_draws(mode: str, *, draws: int = 1, seed: int = 0, **kwargs) -> list[Assignment]:
    """``draws`` independent assignments for the random controls (one for every other mode).

    Draw k uses the k-th child of ``SeedSequence(seed)``, so draws are independent, reproducible
    from ``seed``, and draw k is the same whatever the number of draws.
    """
    if mode not in MULTI_DRAW_MODES:
        return [assign_signals(mode, seed=seed, **kwargs)]
    if draws < 1:
        raise ValueError(f"category.draws must be >= 1, got {draws}")
    children = np.random.SeedSequence(seed).spawn(draws)
    return [assign_signals(mode, seed=child, **kwargs) for child in children]
