"""Agreement statistics and tests for the change in correlation that steering causes.

Steering changes predictions but not ratings, so r(base, y) and r(steered, y) are two dependent
correlations sharing the ratings. A paired bootstrap over samples bounds their difference and gives
its p (the family p, :mod:`steering.stats.family`); Williams' t (Steiger 1980, eq. 3) and Zou's
(2007) interval, which assume normality, are kept as secondary figures.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from steering.stats.family import WILLIAMS_P_COLUMN, family_p, family_p_column

# Resamples x samples evaluated at once in the bootstrap (bounds memory for large inputs).
_BOOTSTRAP_CHUNK = 4_000_000


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    return x, y


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; nan (no warning) when either input is constant or shorter than 2."""
    x, y = _pair(x, y)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.pearsonr(x, y).statistic)


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments); nan when undefined."""
    x, y = _pair(x, y)
    if x.size == 0:
        return math.nan
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = np.mean((x - mx) * (y - my))
    denom = vx + vy + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else math.nan


def mae(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error."""
    x, y = _pair(x, y)
    return float(np.mean(np.abs(x - y))) if x.size else math.nan


def williams_t(r_jk: float, r_jh: float, r_kh: float, n: int) -> tuple[float, float]:
    """Williams' t for H0: rho_jk = rho_jh (correlations sharing variable j), df = n - 3.

    Steiger (1980), eq. 3. Returns (t, two-sided p); nan when undefined (n <= 3, nan inputs, or a
    zero denominator with a non-zero difference).
    """
    if n <= 3 or not all(map(math.isfinite, (r_jk, r_jh, r_kh))):
        return math.nan, math.nan
    det = 1 - r_jk**2 - r_jh**2 - r_kh**2 + 2 * r_jk * r_jh * r_kh
    rbar = (r_jk + r_jh) / 2
    denom = 2 * (n - 1) / (n - 3) * det + rbar**2 * (1 - r_kh) ** 3
    diff = r_jk - r_jh
    if denom <= 0:
        return (0.0, 1.0) if diff == 0 else (math.nan, math.nan)
    t = diff * math.sqrt((n - 1) * (1 + r_kh)) / math.sqrt(denom)
    return float(t), float(2 * stats.t.sf(abs(t), n - 3))


def _fisher_ci(r: float, n: int, z_crit: float) -> tuple[float, float]:
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    half = z_crit / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def zou_ci(r_jk: float, r_jh: float, r_kh: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Zou (2007) interval for r_jk - r_jh, two overlapping dependent correlations (shared j).

    Combines the Fisher-z intervals of each correlation, corrected by the correlation between the
    two estimates (Zou 2007, example 2). nan when n <= 3 or an input is nan.
    """
    if n <= 3 or not all(map(math.isfinite, (r_jk, r_jh, r_kh))):
        return math.nan, math.nan
    z_crit = float(stats.norm.ppf(0.5 + confidence / 2))
    l1, u1 = _fisher_ci(r_jk, n, z_crit)
    l2, u2 = _fisher_ci(r_jh, n, z_crit)
    denom = (1 - r_jk**2) * (1 - r_jh**2)
    if denom <= 0:
        c = 1.0
    else:
        c = ((r_kh - 0.5 * r_jk * r_jh) * (1 - r_jk**2 - r_jh**2 - r_kh**2) + r_kh**3) / denom
    diff = r_jk - r_jh
    low = diff - math.sqrt(max((r_jk - l1) ** 2 + (u2 - r_jh) ** 2 - 2 * c * (r_jk - l1) * (u2 - r_jh), 0.0))
    high = diff + math.sqrt(max((u1 - r_jk) ** 2 + (r_jh - l2) ** 2 - 2 * c * (u1 - r_jk) * (r_jh - l2), 0.0))
    return float(low), float(high)


def _rowwise_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two (B, n) arrays; nan for constant rows."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) clip indices of the paired bootstrap; the same ``seed`` and n give the same clips,
    so every statistic of a run resampled with the run's ``metrics.seed`` is paired with its Δr."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_dr_samples(
    y: np.ndarray, base: np.ndarray, steered: np.ndarray, resamples: int = 2000, seed: int = 0
) -> np.ndarray:
    """r(steered, y) - r(base, y) on ``resamples`` paired resamples of the samples (same indices)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    base = np.asarray(base, dtype=np.float64).ravel()
    steered = np.asarray(steered, dtype=np.float64).ravel()
    n = y.size
    if not (base.size == steered.size == n):
        raise ValueError(f"y, base and steered must have the same length, got {n}, {base.size}, {steered.size}")
    if n < 2 or resamples < 1:
        return np.full(max(resamples, 0), np.nan)
    idx = bootstrap_indices(n, resamples, seed)
    out = np.empty(resamples)
    step = max(1, _BOOTSTRAP_CHUNK // n)
    for start in range(0, resamples, step):
        block = idx[start : start + step]
        yb = y[block]
        out[start : start + step] = _rowwise_r(steered[block], yb) - _rowwise_r(base[block], yb)
    return out


def paired_bootstrap_dr(
    y: np.ndarray,
    base: np.ndarray,
    steered: np.ndarray,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of r(steered, y) - r(base, y), resampling samples jointly.

    Resamples where a correlation is undefined (a constant resample) are left out; nan when none
    remain.
    """
    return percentile_interval(bootstrap_dr_samples(y, base, steered, resamples, seed), confidence)


def percentile_interval(diffs: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples, non-finite ones left out; nan when none remain."""
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float(low), float(high)


def target_metrics(
    y: np.ndarray,
    base: np.ndarray,
    steered: np.ndarray,
    *,
    prefix_target: str,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """All per-target metrics of a steering run, keyed ``r_base_{t}``, ``dr_{t}_p``, ... (t = prefix_target).

    One set of paired resamples gives the interval (``dr_{t}_ci_*``) and the family p (``dr_{t}_p``,
    :func:`steering.stats.family.family_p`). Williams/Zou (``dr_{t}_williams_p``, ``dr_{t}_zou_*``)
    use j = ratings, k = steered, h = base. When the steered predictions equal the baseline exactly,
    dr is 0, every p is 1 and every interval is [0, 0].
    """
    t = prefix_target
    y, base = _pair(y, base)
    _, steered = _pair(y, steered)
    n = y.size
    r_base, r_steered = pearson(base, y), pearson(steered, y)
    identical = np.array_equal(base, steered)
    if identical:
        dr, p = (0.0, 1.0) if math.isfinite(r_base) else (math.nan, math.nan)
        p_williams = p
        ci = zou = (dr, dr)
    else:
        dr = r_steered - r_base
        r_kh = pearson(steered, base)
        _, p_williams = williams_t(r_steered, r_base, r_kh, n)
        diffs = bootstrap_dr_samples(y, base, steered, resamples, seed)
        ci, p = percentile_interval(diffs, confidence), family_p(y, base, steered, diffs, resamples, seed)
        zou = zou_ci(r_steered, r_base, r_kh, n, confidence)
    return {
        f"r_base_{t}": r_base,
        f"r_steered_{t}": r_steered,
        f"dr_{t}": dr,
        f"dr_{t}_ci_low": ci[0],
        f"dr_{t}_ci_high": ci[1],
        family_p_column(t): p,
        WILLIAMS_P_COLUMN.format(t=t): p_williams,
        f"dr_{t}_zou_low": zou[0],
        f"dr_{t}_zou_high": zou[1],
        f"ccc_base_{t}": ccc(base, y),
        f"ccc_steered_{t}": ccc(steered, y),
        f"mae_base_{t}": mae(base, y),
        f"mae_steered_{t}": mae(steered, y),
        f"shift_{t}": float(np.mean(steered - base)) if n else math.nan,
    }
