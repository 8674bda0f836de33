"""Calibration of the Δr intervals and p-values under null steering, with normal and non-normal noise.

A null steering changes the predictions without changing how well they track the ratings. With
standardised ratings y and baseline b = rho y + sqrt(1 - rho^2) u, the steered prediction

    s = b + e,   e = sqrt(1 - rho^2) ((c - 1) u + sqrt(1 - c^2) w)        (u, w, y independent)

adds noise e that does not depend on the ratings and leaves the population correlation unchanged
(r(s, y) = r(b, y) = rho; r(b, s) = rho^2 + (1 - rho^2) c, 0.94 for the defaults, as close as real
steering keeps them). y, u and w are drawn from ``--distribution``, each with mean 0 and variance
1: ``normal``, ``t3`` (Student t, 3 df: heavy tails), ``skewed`` (exponential, skewness 2) or
``bounded`` (uniform), so the null holds exactly for every one of them. A 95 % interval should
then exclude 0, and a test at 0.05 reject, in about 5 % of replications.

Per replication one set of B paired resamples gives both the percentile interval and the
bootstrap p (as in the runs, :func:`steering.stats.metrics.target_metrics`); R paired permutations
(each clip's two predictions swapped with probability 1/2) give the permutation p. Both are
computed from resample counts by matrix products (:func:`bootstrap_samples`, :func:`permutation_ps`),
equal to the library's per-resample loops (``tests/test_calibration.py``).

For contrast, ``--noise`` adds plain independent noise s = b + sigma z instead: that lowers the
population correlation (r(s, y) = rho / sqrt(1 + sigma^2)), so it is a real (negative) effect and
the rejection rate rises with sigma and n; it is a null only for sigma << 1 / sqrt(n).

Usage: ``python benchmarks/calibration.py [--distribution normal|t3|skewed|bounded] [--reps 2000]
[--seed 0] [--clips 182] [--rho 0.6] [--c 0.9] [--resamples 2000] [--noise SIGMA]``; ``--widths``
prints the Zou-vs-bootstrap table of docs/statistics.md instead. Prints the share of intervals
excluding 0 and the rejection rate of each p, each with its binomial standard error, and last
``family p: X.X %``, the rate of the p every table uses (:data:`steering.stats.family.FAMILY_P_METHOD`).
"""

from __future__ import annotations

import argparse
import math
import os
import time

# Small (B, n) @ (n, 8) products: one BLAS thread is ~40x faster than many on a shared machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from steering.stats.family import FAMILY_P_LABEL, FAMILY_P_METHOD  # noqa: E402
from steering.stats.metrics import paired_bootstrap_dr, pearson, williams_t, zou_ci  # noqa: E402

DISTRIBUTIONS = ("normal", "t3", "skewed", "bounded")
#: Rejection events counted per replication: intervals excluding 0, then p-values below the level.
INTERVALS = {"bootstrap_ci": "paired bootstrap interval", "zou_ci": "Zou interval"}
P_VALUES = {"bootstrap": "paired bootstrap p", "permutation": "paired permutation p", "williams": "Williams p"}


def standard_noise(rng: np.random.Generator, distribution: str, size) -> np.ndarray:
    """Draws with mean 0 and variance 1 from ``distribution`` (one of :data:`DISTRIBUTIONS`)."""
    if distribution == "normal":
        return rng.standard_normal(size)
    if distribution == "t3":
        return rng.standard_t(3, size) / math.sqrt(3.0)  # var of t_3 is 3
    if distribution == "skewed":
        return rng.standard_exponential(size) - 1.0
    if distribution == "bounded":
        return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size)
    raise ValueError(f"--distribution: unknown {distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")


def null_predictions(
    rng: np.random.Generator, n: int, rho: float, c: float, noise: float | None = None, distribution: str = "normal"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratings, baseline, steered) for one replication (see the module docstring)."""
    y, u, w = standard_noise(rng, distribution, (3, n))
    base = rho * y + math.sqrt(1 - rho**2) * u
    if noise is not None:
        return y, base, base + noise * rng.standard_normal(n)
    steered = rho * y + math.sqrt(1 - rho**2) * (c * u + math.sqrt(1 - c**2) * w)
    return y, base, steered


def _r_from_sums(n: float, sx, sy, sxx, syy, sxy) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx**2) * (n * syy - sy**2))


def bootstrap_samples(y: np.ndarray, base: np.ndarray, steered: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Δr* on the same paired resamples as :func:`steering.stats.metrics.bootstrap_dr_samples` (same seed),
    from resample counts: one (B, n) @ (n, 8) product instead of B gathers."""
    n = y.size
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.bincount((idx + n * np.arange(resamples)[:, None]).ravel(), minlength=resamples * n)
    cols = np.stack([y, base, steered, y * y, base * base, steered * steered, base * y, steered * y], axis=1)
    sy, sb, ss, syy, sbb, sss, sby, ssy = (counts.reshape(resamples, n).astype(np.float64) @ cols).T
    return _r_from_sums(n, ss, sy, sss, syy, ssy) - _r_from_sums(n, sb, sy, sbb, syy, sby)


def permutation_ps(y: np.ndarray, base: np.ndarray, steered: np.ndarray, permutations: int, seed: int) -> float:
    """:func:`steering.stats.family.permutation_dr_p` from swap masks by one (R, n) @ (n, 3) product."""
    n = y.size
    b = (base - base.mean()) / base.std()
    s = (steered - steered.mean()) / steered.std()
    swap = (np.random.default_rng(seed).random((permutations, n)) < 0.5).astype(np.float64)
    d = b - s  # a swapped clip adds d to the steered side and takes it from the baseline side
    delta = swap @ np.stack([d, b * b - s * s, d * y], axis=1)
    sy, syy = y.sum(), (y * y).sum()
    r_s = _r_from_sums(n, s.sum() + delta[:, 0], sy, (s * s).sum() + delta[:, 1], syy, (s * y).sum() + delta[:, 2])
    r_b = _r_from_sums(n, b.sum() - delta[:, 0], sy, (b * b).sum() - delta[:, 1], syy, (b * y).sum() - delta[:, 2])
    observed = abs(pearson(s, y) - pearson(b, y))
    return float((1 + int((np.abs(r_s - r_b) >= observed - 1e-12).sum())) / (1 + permutations))


def _replication(y, base, steered, resamples: int, confidence: float, seed: int) -> dict[str, bool]:
    """Which intervals exclude 0 and which p-values fall below 1 - confidence, for one replication."""
    level = 1 - confidence
    diffs = bootstrap_samples(y, base, steered, resamples, seed)
    diffs = diffs[np.isfinite(diffs)]
    low, high = np.quantile(diffs, [level / 2, 1 - level / 2])
    tail = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    n = y.size
    r_s, r_b, r_bs = pearson(steered, y), pearson(base, y), pearson(steered, base)
    z_low, z_high = zou_ci(r_s, r_b, r_bs, n, confidence)
    return {
        "bootstrap_ci": bool(low > 0 or high < 0),
        "zou_ci": bool(z_low > 0 or z_high < 0),
        "bootstrap": min(1.0, 2 * (tail + 1) / (diffs.size + 1)) <= level,
        "permutation": permutation_ps(y, base, steered, resamples, seed + 1) <= level,
        "williams": williams_t(r_s, r_b, r_bs, n)[1] <= level,
        "r_base_steered": r_bs,
    }


def null_rejection_rates(
    reps: int = 1000,
    n: int = 182,
    rho: float = 0.6,
    c: float = 0.9,
    resamples: int = 2000,
    confidence: float = 0.95,
    noise: float | None = None,
    seed: int = 0,
    distribution: str = "normal",
) -> dict[str, float]:
    """Share of replications where each interval excludes 0 and each p is <= 1 - confidence (keys:
    :data:`INTERVALS`, :data:`P_VALUES`, ``family``), and the mean r(baseline, steered)."""
    rng = np.random.default_rng(seed)
    events = []
    for rep in range(reps):
        y, base, steered = null_predictions(rng, n, rho, c, noise, distribution)
        events.append(_replication(y, base, steered, resamples, confidence, seed=2 * (seed * 1_000_003 + rep)))
    rates = {k: float(np.mean([e[k] for e in events])) for k in (*INTERVALS, *P_VALUES)}
    rates["family"] = rates[FAMILY_P_METHOD]
    rates["mean_r_base_steered"] = float(np.mean([e["r_base_steered"] for e in events]))
    return rates


def interval_widths(n: int = 182, rho: float = 0.6, seed: int = 0) -> list[dict[str, float]]:
    """Zou vs bootstrap vs Williams for a real, shrinking effect as r(base, steered) -> 1 (docs/statistics.md)."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n)
    base = rho * y + math.sqrt(1 - rho**2) * rng.standard_normal(n)
    rows = []
    for eps in (0.3, 0.1, 0.03, 0.01, 0.003):
        steered = base + 0.3 * eps * (y - base) + 0.2 * eps * rng.standard_normal(n)
        r_s, r_b, r_bs = pearson(steered, y), pearson(base, y), pearson(steered, base)
        zou = zou_ci(r_s, r_b, r_bs, n)
        boot = paired_bootstrap_dr(y, base, steered, 2000)
        rows.append(
            {
                "r_base_steered": r_bs,
                "dr": r_s - r_b,
                "zou_low": zou[0],
                "zou_high": zou[1],
                "boot_low": boot[0],
                "boot_high": boot[1],
                "williams_p": williams_t(r_s, r_b, r_bs, n)[1],
            }
        )
    return rows


def _print_rates(rates: dict[str, float], reps: int, confidence: float) -> None:
    def line(label: str, rate: float) -> str:
        return f"  {label:26s} {100 * rate:5.1f} %  (SE {100 * math.sqrt(rate * (1 - rate) / reps):.1f} %)"

    print(f"{100 * confidence:g} % intervals excluding 0:")
    for key, label in INTERVALS.items():
        print(line(label, rates[key]))
    print(f"p <= {1 - confidence:g}:")
    for key, label in P_VALUES.items():
        print(line(label, rates[key]))
    print(f"family p: {100 * rates['family']:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, default="normal", help="noise of y, u and w")
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--clips", type=int, default=182, help="clips per replication (the demo's test split: 182)")
    parser.add_argument("--rho", type=float, default=0.6, help="population r(baseline, ratings)")
    parser.add_argument("--c", type=float, default=0.9, help="share of the baseline's residual the steering keeps")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (and permutations)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--noise", type=float, default=None, help="plain independent noise sd instead (not a null)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widths", action="store_true", help="only the Zou-vs-bootstrap width table")
    args = parser.parse_args()
    if args.widths:
        for row in interval_widths(args.clips, args.rho, args.seed):
            print(
                f"r(base,steered)={row['r_base_steered']:.5f} dr={row['dr']:+.4f} "
                f"zou=[{row['zou_low']:+.4f}, {row['zou_high']:+.4f}] "
                f"bootstrap=[{row['boot_low']:+.4f}, {row['boot_high']:+.4f}] williams p={row['williams_p']:.2g}"
            )
        return
    start = time.perf_counter()
    rates = null_rejection_rates(
        args.reps,
        args.clips,
        args.rho,
        args.c,
        args.resamples,
        args.confidence,
        args.noise,
        args.seed,
        args.distribution,
    )
    nominal = 1 - args.confidence
    se = math.sqrt(nominal * (1 - nominal) / args.reps)
    design = f"plain noise sd {args.noise}" if args.noise is not None else f"null rotation c={args.c}"
    print(
        f"{args.reps} replications, {args.distribution} noise, n={args.clips}, rho={args.rho}, {design}, "
        f"B={args.resamples}, seed {args.seed} ({time.perf_counter() - start:.1f} s)"
    )
    print(
        f"mean r(baseline, steered) = {rates['mean_r_base_steered']:.3f}; "
        f"nominal {100 * nominal:.1f} % ± {100 * se:.1f} % (1 SE); family p = {FAMILY_P_LABEL}"
    )
    _print_rates(rates, args.reps, args.confidence)


if __name__ == "__main__":
    main()
