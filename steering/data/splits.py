"""Train/validation/test splits.

``legacy`` reproduces the split behind every published number: ``numpy.random.seed(42)``, then
``numpy.random.shuffle(arange(N))``; the first ``int(0.7 N)`` indices train, the rest validate.

``threeway`` keeps exactly that training part (so checkpoints trained with the earlier pipeline
never see val or test clips) and divides the legacy validation part in two with its own fixed
seed: ``val`` for choosing checkpoints and strengths, ``test`` for reporting.
"""

from __future__ import annotations

import numpy as np

from steering.util.hashing import indices_digest
from steering.vocab import SPLIT_SCHEMES as SCHEMES
from steering.vocab import SPLITS as SPLIT_NAMES

LEGACY_SEED = 42
THREEWAY_SEED = 20240607


def legacy_split(n: int, seed: int = LEGACY_SEED, train_fraction: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) exactly as the earlier pipeline made them (uses and restores numpy's global RNG)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        order = np.arange(n)
        np.random.shuffle(order)
    finally:
        np.random.set_state(state)
    cut = int(train_fraction * n)
    return order[:cut], order[cut:]


def threeway_split(
    n: int, seed: int = THREEWAY_SEED, train_fraction: float = 0.7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test): the legacy train part, and the legacy val part halved with ``seed``."""
    train, rest = legacy_split(n, train_fraction=train_fraction)
    rest = np.random.default_rng(seed).permutation(rest)
    half = len(rest) // 2
    return train, rest[:half], rest[half:]


def split_indices(n: int, name: str, scheme: str = "threeway", train_fraction: float = 0.7) -> np.ndarray:
    """File indices of split ``name`` (train, val, test, all) under ``scheme``."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
    if name == "all":
        return np.arange(n)
    if scheme == "legacy":
        train, val = legacy_split(n, train_fraction=train_fraction)
        if name == "test":
            raise ValueError("the 'legacy' split has no test part; use split=threeway or eval_split=val")
        return train if name == "train" else val
    if scheme == "threeway":
        train, val, test = threeway_split(n, train_fraction=train_fraction)
        return {"train": train, "val": val, "test": test}[name]
    raise ValueError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES}")


def indices_hash(indices: np.ndarray) -> str:
    """Content hash of an index array (order kept): what a cache keyed on "these clips" must use."""
    return indices_digest(indices, 16)
