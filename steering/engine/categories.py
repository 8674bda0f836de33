"""Which steering signal each sample gets (the ``category`` option): one small class per mode, registered.

A mode declares what the rest of the framework needs to know about it, so that no other module
names modes:

- ``role``: ``condition`` (a way to steer) or ``control`` (what a condition is compared with in
  ``contrasts.csv``); registration refuses a mode without one.
- ``oracle``: its choice of signal reads the ground-truth ratings of the evaluated samples.
- ``multi_draw``: its choice is random, so a run makes ``category.draws`` draws.
- ``per_sample``: each sample's own category decides its signal (a category that takes most
  samples is warned about).
- ``of_a_category``: the signals are category signals (``category_accuracy`` means something).
- ``needs``: inputs beyond the signal table and the true categories (see :data:`NEEDS`).
- ``min_categories``: signals it needs at least.

Adding a mode is one registered class here and one ``conf/category/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from steering.vocab import PATHWAYS

#: What a mode can ask for: reference activations (a Gaussian of them), the grand-mean signal, the
#: ``category.target`` name, each sample's category from the model's own prediction.
NEEDS = frozenset({"reference", "grand_mean", "target", "predicted"})
ROLES = ("condition", "control")
#: The file, beside predictions.csv, that keeps every draw of a mode drawing from the reference Gaussian.
DRAWS_FILE = "random_draws.npz"


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


#: Added to the diagonal of the active units' covariance before its Cholesky factor, relative to their
#: mean variance: makes a rank-deficient covariance (fewer reference samples than units, collinear
#: units) positive definite while changing the draws' variances by one part in a million.
COV_JITTER = 1e-6


def stable_factor(cov: np.ndarray, jitter: float = COV_JITTER) -> np.ndarray:
    """A factor L with L @ L.T ~= cov that moves little when cov moves little.

    Lower Cholesky factor of the active units' covariance plus ``jitter`` x their mean variance on
    the diagonal; units with zero variance (silent in every reference sample) get zero rows, so
    their draws stay exactly at the mean. Unlike eigenvectors (``eigh``), which rotate or swap
    freely when eigenvalues are close, the Cholesky factor depends continuously on the matrix in a
    fixed unit order, so the same seed gives the same draws from activations equal up to rounding.
    """
    cov = np.asarray(cov, dtype=np.float64)
    active = np.flatnonzero(np.diag(cov) > 0)
    factor = np.zeros_like(cov)
    if active.size:
        sub = cov[np.ix_(active, active)]
        sub = sub + jitter * float(np.mean(np.diag(sub))) * np.eye(active.size)
        factor[np.ix_(active, active)] = np.linalg.cholesky(sub)
    return factor


@dataclass(frozen=True)
class GaussianReference:
    """N(mean, cov) of reference pass-1 activations per pathway, factored once for many draws.

    Draws are clipped at 0: real 128-d activations are ReLU outputs (>= 0). Clipping keeps exact
    zeros where units are silent and raises the mean of dimensions near 0 (a rectified Gaussian).
    The factor is :func:`stable_factor` (Cholesky), so draws are reproducible from the seed even
    when the activations are recomputed with different rounding.
    """

    mean: dict[str, np.ndarray]  # pathway -> (D,)
    factor: dict[str, np.ndarray]  # pathway -> (D, D) with factor @ factor.T = cov (+ jitter)

    @classmethod
    def from_activations(cls, activations: Mapping[str, np.ndarray]) -> GaussianReference:
        mean, factor = {}, {}
        for p in PATHWAYS:
            acts = np.asarray(activations[p], dtype=np.float64)
            if len(acts) < 2:
                raise ValueError("the random control needs the activations of at least two reference samples")
            mean[p] = acts.mean(axis=0)
            factor[p] = stable_factor(np.cov(acts, rowvar=False))
        return cls(mean, factor)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` clipped draws per pathway, float32."""
        out = {}
        for p in PATHWAYS:
            z = rng.standard_normal((n, len(self.mean[p])))
            out[p] = np.maximum(z @ self.factor[p].T + self.mean[p], 0.0).astype(np.float32)
        return out


@dataclass(frozen=True)
class CategoryInputs:
    """What a mode may read. ``table``: category -> pathway -> (128,) signal; ``true_categories``:
    (N,) names from the ratings; the rest only when the mode ``needs`` them (``predicted_categories``:
    (N,) names from the model's predictions; ``reference``: the Gaussian of the pass-1 activations of
    the samples the signals come from, never the evaluated ones; ``grand_mean``: pathway -> (128,)
    mean signal, see ``SignalSet.grand_mean``; ``fixed_target``: a category name)."""

    table: Mapping[str, Mapping[str, np.ndarray]]
    true_categories: np.ndarray
    predicted_categories: np.ndarray | None = None
    reference: GaussianReference | None = None
    grand_mean: Mapping[str, np.ndarray] | None = None
    fixed_target: str | None = None


class CategoryMode:
    """One ``category`` option: its declarations (see the module docstring) and how it assigns signals."""

    name: ClassVar[str]
    role: ClassVar[str]
    oracle: ClassVar[bool] = False
    multi_draw: ClassVar[bool] = False
    per_sample: ClassVar[bool] = False
    of_a_category: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset()
    min_categories: ClassVar[int] = 1

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        """Each sample's signal for one draw (``rng``: this draw's generator)."""
        raise NotImplementedError

    def check(self, inputs: CategoryInputs) -> None:
        """Raise ValueError when ``inputs`` lack what this mode needs."""
        if len(inputs.table) < self.min_categories:
            raise ValueError(f"the {self.name} {self.role} needs signals for at least {self.min_categories} categories")
        if "reference" in self.needs and inputs.reference is None:
            raise ValueError(f"the {self.name} {self.role} needs reference activations")
        if "grand_mean" in self.needs and inputs.grand_mean is None:
            raise ValueError(f"the {self.name} {self.role} needs the grand mean signal")
        if "predicted" in self.needs and inputs.predicted_categories is None:
            raise ValueError(f"the {self.name} {self.role} needs the predicted categories")
        if "target" in self.needs and inputs.fixed_target not in inputs.table:
            have = sorted(inputs.table)
            raise ValueError(f"unknown fixed category {inputs.fixed_target!r}; signals exist for {have}")


_REGISTRY: dict[str, CategoryMode] = {}
#: Every registered category mode by name (read-only view; register with :func:`register_category`).
CATEGORY_MODES = MappingProxyType(_REGISTRY)


def register_category(cls: type[CategoryMode]) -> type[CategoryMode]:
    """Class decorator: register a mode under ``cls.name``, refusing incomplete declarations.

    A mode without a role would be left out of ``contrasts.csv`` without a word, so it is refused
    here, when the module is imported (every test then fails).
    """
    name = getattr(cls, "name", None)
    if not name or name in _REGISTRY:
        raise TypeError(f"category mode {cls.__name__} needs a name of its own, got {name!r}")
    if getattr(cls, "role", None) not in ROLES:
        raise TypeError(f"category mode {name!r} must declare role = 'condition' or 'control'")
    if not cls.needs <= NEEDS:
        raise TypeError(f"category mode {name!r} needs unknown inputs {sorted(cls.needs - NEEDS)}")
    _REGISTRY[name] = cls()
    return cls


def category_mode(name: str) -> CategoryMode:
    """The registered mode ``name`` (ValueError naming the modes there are)."""
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise ValueError(f"unknown category mode {name!r}; expected one of {tuple(_REGISTRY)}") from None


def modes_with_role(role: str) -> tuple[str, ...]:
    """The names of the registered modes of ``role`` (``condition`` or ``control``)."""
    return tuple(name for name, mode in _REGISTRY.items() if mode.role == role)


def from_labels(labels: np.ndarray, table: Mapping[str, Mapping[str, np.ndarray]], oracle: bool) -> Assignment:
    n = len(labels)
    dim = len(next(iter(next(iter(table.values())).values())))
    mask = np.array([lab in table for lab in labels], dtype=bool)
    vectors = {p: np.zeros((n, dim), dtype=np.float32) for p in PATHWAYS}
    for i in np.flatnonzero(mask):
        for p in PATHWAYS:
            vectors[p][i] = table[labels[i]][p]
    labels = np.where(mask, labels, "")
    return Assignment(labels.astype(object), vectors, mask, oracle)


def _everyone(name: str, vectors: dict[str, np.ndarray]) -> Assignment:
    """Every sample steered, labelled with the mode's name (the signal is not a category's)."""
    n = len(next(iter(vectors.values())))
    return Assignment(np.full(n, name, dtype=object), vectors, np.ones(n, dtype=bool), oracle=False)


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


# --------------------------------------------------------------------------- the modes
@register_category
class Oracle(CategoryMode):
    """Each sample gets the signal of its own ground-truth category."""

    name = "oracle"
    role = "condition"
    oracle = True
    per_sample = True

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        return from_labels(np.asarray(inputs.true_categories, dtype=object), inputs.table, oracle=True)


@register_category
class Predicted(CategoryMode):
    """Each sample gets the signal of the category of the model's own prediction (no ratings read)."""

    name = "predicted"
    role = "condition"
    per_sample = True
    needs = frozenset({"predicted"})

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        return from_labels(np.asarray(inputs.predicted_categories, dtype=object), inputs.table, oracle=False)


@register_category
class Fixed(CategoryMode):
    """Every sample is steered toward one named category (``category.target``)."""

    name = "fixed"
    role = "condition"
    needs = frozenset({"target"})

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        n = len(inputs.true_categories)
        return from_labels(np.full(n, inputs.fixed_target, dtype=object), inputs.table, oracle=False)


@register_category
class Shuffled(CategoryMode):
    """Control: the oracle's labels permuted among the covered samples (see :func:`shuffled_labels`)."""

    name = "shuffled"
    role = "control"
    oracle = True
    multi_draw = True
    per_sample = True
    min_categories = 2

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        own = np.asarray(inputs.true_categories, dtype=object)
        covered = np.array([c in inputs.table for c in own], dtype=bool)
        return from_labels(shuffled_labels(own, covered, rng), inputs.table, oracle=True)


@register_category
class Random(CategoryMode):
    """Control: vectors drawn from the Gaussian of reference pass-1 activations, clipped at 0."""

    name = "random"
    role = "control"
    multi_draw = True
    of_a_category = False
    needs = frozenset({"reference"})

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        return _everyone(self.name, inputs.reference.sample(len(inputs.true_categories), rng))


@register_category
class Mean(CategoryMode):
    """Control: every sample gets the grand mean of the category signals."""

    name = "mean"
    role = "control"
    of_a_category = False
    needs = frozenset({"grand_mean"})

    def assign(self, inputs: CategoryInputs, rng: np.random.Generator) -> Assignment:
        n = len(inputs.true_categories)
        mean = inputs.grand_mean
        return _everyone(self.name, {p: np.tile(np.asarray(mean[p], dtype=np.float32), (n, 1)) for p in PATHWAYS})


# --------------------------------------------------------------------------- entry points
def draw_vectors(assignments: list[Assignment]) -> dict[str, np.ndarray]:
    """Every draw's signal vectors as arrays for a file (``<pathway>``: (draws, N, D) float32; ``mask``:
    (draws, N)), so a random control's draws are kept with its run, not only the seed that made them."""
    arrays = {p: np.stack([a.vectors[p] for a in assignments]).astype(np.float32) for p in PATHWAYS}
    arrays["mask"] = np.stack([a.mask for a in assignments])
    return arrays


def assign_signals(mode: str, *, seed: int | np.random.SeedSequence = 0, **inputs) -> Assignment:
    """Choose each sample's signal (one draw); ``inputs`` are the fields of :class:`CategoryInputs`."""
    chosen = category_mode(mode)
    given = CategoryInputs(**inputs)
    if not given.table:
        raise ValueError("no steering signals available (every category fell below min_samples?)")
    chosen.check(given)
    return chosen.assign(given, np.random.default_rng(seed))


def assign_draws(mode: str, *, draws: int = 1, seed: int = 0, **inputs) -> list[Assignment]:
    """``draws`` independent assignments for a ``multi_draw`` mode (one for every other mode).

    Draw k uses the k-th child of ``SeedSequence(seed)``, so draws are independent, reproducible
    from ``seed``, and draw k is the same whatever the number of draws.
    """
    if not category_mode(mode).multi_draw:
        return [assign_signals(mode, seed=seed, **inputs)]
    if draws < 1:
        raise ValueError(f"category.draws must be >= 1, got {draws}")
    children = np.random.SeedSequence(seed).spawn(draws)
    return [assign_signals(mode, seed=child, **inputs) for child in children]
