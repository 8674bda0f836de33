"""Which labels the signals are made from (``signals.labels``), and the clips held out of a fit.

- ``observed``: each clip's own (valence, arousal) rating.
- ``permuted`` (control): the rating rows of the signal split's clips permuted among those clips,
  before categories and fitting targets are derived, so nothing downstream sees the true pairing
  of clip and rating. Category sizes stay the same (the ratings are only moved between clips).
- ``none`` (control): every clip in one group; its ratings stay the fitting targets, but no
  category information reaches the signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steering.data.binning import Binning

#: The one group of ``signals.labels=none``.
ALL_CLIPS = "all clips"
#: Seed salts, so the permutation and the held-out draw are independent streams of the run's seed.
_PERMUTE, _HOLDOUT = 1, 2


@dataclass(frozen=True)
class SignalLabels:
    """The signal split's clips with the ratings and groups the signals are made from.

    ``indices``: sorted file indices; ``valence``/``arousal``: the ratings each clip is given (after
    a permutation for ``permuted``); ``groups``: each clip's category (``ALL_CLIPS`` for ``none``);
    ``ratings_from``: for ``permuted``, the file index whose ratings each clip was given.
    """

    mode: str
    indices: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    groups: np.ndarray
    ratings_from: np.ndarray | None = None

    @property
    def targets(self) -> np.ndarray:
        """(N, 2) ratings (valence, arousal): what a fit is asked to predict."""
        return np.stack([self.valence, self.arousal], axis=1).astype(np.float64)


def seeded_rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), salt])


def permutation(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` that moves at least one element (for n >= 2)."""
    rng = seeded_rng(seed, _PERMUTE)
    order = rng.permutation(n)
    if n >= 2 and np.array_equal(order, np.arange(n)):  # ratings left in place would not be a control
        order = np.roll(order, 1)
    return order


def signal_labels(valence: np.ndarray, arousal: np.ndarray, indices, binning: Binning, mode: str, seed: int):
    """The :class:`SignalLabels` of ``indices`` (file indices) for ``mode``, from the file's ratings."""
    idx = np.unique(np.asarray(indices, dtype=np.int64))
    val = np.asarray(valence, dtype=np.float64)[idx]
    aro = np.asarray(arousal, dtype=np.float64)[idx]
    ratings_from = None
    if mode == "permuted":
        order = permutation(idx.size, seed)
        val, aro, ratings_from = val[order], aro[order], idx[order]
    elif mode not in ("observed", "none"):
        raise ValueError(f"unknown signals.labels {mode!r}; expected observed, permuted or none")
    if mode == "none":
        groups = np.full(idx.size, ALL_CLIPS, dtype=object)
    else:
        groups = np.asarray(binning.categorize(val, aro), dtype=object)
    return SignalLabels(mode, idx, val, aro, groups, ratings_from)


def holdout_split(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for the clips held out (early stopping, step size), drawn per group.

    Each group gives ``round(fraction * size)`` clips but keeps at least one to fit on; when that
    holds out nothing at all, one clip of the largest group is held out (it needs two).
    """
    groups = np.asarray(groups, dtype=object)
    rng = seeded_rng(seed, _HOLDOUT)
    held = np.zeros(groups.size, dtype=bool)
    names = sorted(set(groups.tolist()))
    for name in names:
        members = np.flatnonzero(groups == name)
        take = min(int(round(fraction * members.size)), members.size - 1)
        held[rng.permutation(members)[:take]] = True
    if not held.any() and names:
        largest = max(names, key=lambda g: (int(np.sum(groups == g)), g))
        members = np.flatnonzero(groups == largest)
        if members.size >= 2:
            held[rng.permutation(members)[0]] = True
    return held
