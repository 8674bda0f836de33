"""The family p: the one p-value of Δr that every table, multiplicity family and confirmation uses.

Williams' t and Zou's interval assume trivariate normality of (ratings, baseline, steered); ratings
and predictions are bounded and skewed, and under heavy-tailed noise Williams' p rejects a true null
about twice as often as it should (docs/statistics.md, "Calibration check"). The family p is the
two-sided paired-bootstrap p, ``min(1, 2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (1 + B))`` over the B
paired resamples that also give the run's percentile interval: it needs no normality, it agrees
with the interval (p <= 1 - confidence exactly when the interval excludes 0), and it is the p that
multi-draw controls and the contrasts already used, so a table's family is one kind of p.

The choice is made here once: :data:`FAMILY_P_METHOD` names the method (:func:`family_p` computes
it for single- and multi-draw runs), :data:`FAMILY_P_COLUMN` the column every table reads it from
(``dr_<t>_p``), :data:`FAMILY_P_LABEL` how reports name it. Williams' p stays a secondary metric,
``dr_<t>_williams_p``. The paired permutation p (:func:`permutation_dr_p`) was measured against the
bootstrap p (``benchmarks/calibration.py``, docs/statistics.md): equal under t3 and bounded noise,
0.3-0.7 points closer to 5 % under normal and skewed noise; the bootstrap p is kept because it
decides exactly as the interval printed beside it and tests Δr = 0 itself, not the stronger
clip-by-clip exchangeability of the two predictions.
"""

from __future__ import annotations

import math

import numpy as np

#: How the family p is computed (the calibration benchmark's ``family p`` line measures this one).
FAMILY_P_METHOD = "bootstrap"
#: The column (metric) holding each target's family p; ``{t}`` is the target.
FAMILY_P_COLUMN = "dr_{t}_p"
#: How reports name the family p (by method).
FAMILY_P_LABEL = {"bootstrap": "two-sided paired-bootstrap p", "permutation": "paired permutation p"}[FAMILY_P_METHOD]
#: Williams' p, kept as a secondary metric (single-draw runs only).
WILLIAMS_P_COLUMN = "dr_{t}_williams_p"

# Permutations x samples evaluated at once (bounds memory for large inputs).
_CHUNK = 4_000_000


def family_p_column(target: str) -> str:
    """``dr_<target>_p``: where the family p of ``target`` is read from."""
    return FAMILY_P_COLUMN.format(t=target)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of H0: Δr = 0 from paired-bootstrap Δr samples; nan without finite samples.

    The smallest level at which the percentile interval of ``diffs`` would exclude 0, with the
    (k + 1) / (B + 1) correction, so never below 2 / (B + 1).
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return math.nan
    tail = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    return float(min(1.0, 2 * (tail + 1) / (diffs.size + 1)))


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else x - x.mean()


def _rowwise_r(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """r of each row of ``a`` (R, n) with the vector ``y`` (n,)."""
    a = a - a.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    denom = np.sqrt((a * a).sum(axis=1) * (yc @ yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a @ yc) / denom, np.nan)


def permutation_dr_p(y: np.ndarray, base: np.ndarray, steered: np.ndarray, permutations: int = 2000, seed: int = 0):
    """Two-sided paired permutation p of Δr: each clip's (baseline, steered) pair swapped with probability 1/2.

    Both predictions are standardised first (r ignores scale), so the reference distribution is
    that of Δr when the two predictions are exchangeable clip by clip. ``steered`` may be (draws, n):
    the statistic is then the draw-mean Δr, every draw swapped on the same clips.
    ``(1 + #{|Δr*| >= |Δr|}) / (1 + R)``; nan when undefined.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    b = _standardise(np.asarray(base, dtype=np.float64).ravel())
    draws = [_standardise(d) for d in np.atleast_2d(np.asarray(steered, dtype=np.float64))]
    n = y.size
    if n < 3 or np.ptp(y) == 0 or any(np.ptp(d) == 0 for d in draws) or np.ptp(b) == 0:
        return math.nan
    observed = abs(float(np.mean([_rowwise_r(s[None], y)[0] - _rowwise_r(b[None], y)[0] for s in draws])))
    rng = np.random.default_rng(seed)
    extreme = 0
    step = max(1, _CHUNK // (n * len(draws)))
    for start in range(0, permutations, step):
        swap = rng.random((min(step, permutations - start), n)) < 0.5
        dr = np.mean([_rowwise_r(np.where(swap, b, s), y) - _rowwise_r(np.where(swap, s, b), y) for s in draws], axis=0)
        extreme += int((np.abs(dr) >= observed - 1e-12).sum())
    return float((1 + extreme) / (1 + permutations))


def family_p(y: np.ndarray, base: np.ndarray, steered: np.ndarray, diffs: np.ndarray, resamples: int, seed: int):
    """The family p of Δr (the draw-mean Δr when ``steered`` is (draws, n)) by :data:`FAMILY_P_METHOD`.

    ``diffs``: the run's paired-bootstrap Δr samples (those of its interval), used by ``bootstrap``;
    ``permutation`` draws ``resamples`` swap patterns from ``seed`` instead.
    """
    if FAMILY_P_METHOD == "bootstrap":
        return bootstrap_p(diffs)
    if FAMILY_P_METHOD == "permutation":
        return permutation_dr_p(y, base, steered, resamples, seed)
    raise ValueError(f"FAMILY_P_METHOD: unknown {FAMILY_P_METHOD!r}; expected bootstrap or permutation")
