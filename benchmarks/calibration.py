"""Calibration of the Δr intervals and tests under null steering.

A null steering changes the predictions without changing how well they track the ratings. With
standardised ratings y and baseline b = rho y + sqrt(1 - rho^2) u, the steered prediction

    s = b + e,   e = sqrt(1 - rho^2) ((c - 1) u + sqrt(1 - c^2) w)        (u, w, y independent)

adds noise e that does not depend on the ratings and leaves the population correlation unchanged
(r(s, y) = r(b, y) = rho; r(b, s) = rho^2 + (1 - rho^2) c, 0.94 for the defaults, as close as real
steering keeps them). A 95 % interval should then exclude 0, and a 5 % test reject, in about 5 % of
replications.

For contrast, ``--noise`` adds plain independent noise s = b + sigma z instead: that lowers the
population correlation (r(s, y) = rho / sqrt(1 + sigma^2)), so it is a real (negative) effect and
the rejection rate rises with sigma and n; it is a null only for sigma << 1 / sqrt(n).

Usage: ``python benchmarks/calibration.py [--reps 1000] [--clips 182] [--rho 0.6] [--c 0.9]
[--resamples 2000] [--noise SIGMA]``; ``--widths`` prints the Zou-vs-bootstrap table of
docs/statistics.md instead. Prints the rejection rates of the paired bootstrap (the
primary interval), Williams' t and Zou's interval, each with its binomial standard error.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from steering.stats.metrics import paired_bootstrap_dr, pearson, williams_t, zou_ci


def null_predictions(
    rng: np.random.Generator, n: int, rho: float, c: float, noise: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratings, baseline, steered) for one replication (see the module docstring)."""
    y, u, w = rng.standard_normal((3, n))
    base = rho * y + math.sqrt(1 - rho**2) * u
    if noise is not None:
        return y, base, base + noise * rng.standard_normal(n)
    steered = rho * y + math.sqrt(1 - rho**2) * (c * u + math.sqrt(1 - c**2) * w)
    return y, base, steered


def null_rejection_rates(
    reps: int = 1000,
    n: int = 182,
    rho: float = 0.6,
    c: float = 0.9,
    resamples: int = 2000,
    confidence: float = 0.95,
    noise: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Share of replications where the bootstrap / Zou interval excludes 0 and Williams' p < 1 - confidence."""
    rng = np.random.default_rng(seed)
    hits = {"bootstrap": 0, "williams": 0, "zou": 0}
    r_kh = []
    for rep in range(reps):
        y, base, steered = null_predictions(rng, n, rho, c, noise)
        low, high = paired_bootstrap_dr(y, base, steered, resamples, confidence, seed=rep)
        hits["bootstrap"] += int(low > 0 or high < 0)
        r_s, r_b, r_bs = pearson(steered, y), pearson(base, y), pearson(steered, base)
        _, p = williams_t(r_s, r_b, r_bs, n)
        hits["williams"] += int(p < 1 - confidence)
        z_low, z_high = zou_ci(r_s, r_b, r_bs, n, confidence)
        hits["zou"] += int(z_low > 0 or z_high < 0)
        r_kh.append(r_bs)
    rates = {k: v / reps for k, v in hits.items()}
    rates["mean_r_base_steered"] = float(np.mean(r_kh))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=182, help="clips per replication (the demo's test split: 182)")
    parser.add_argument("--rho", type=float, default=0.6, help="population r(baseline, ratings)")
    parser.add_argument("--c", type=float, default=0.9, help="share of the baseline's residual the steering keeps")
    parser.add_argument("--resamples", type=int, default=2000)
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
        args.reps, args.clips, args.rho, args.c, args.resamples, args.confidence, args.noise, args.seed
    )
    nominal = 1 - args.confidence
    se = math.sqrt(nominal * (1 - nominal) / args.reps)
    design = f"plain noise sd {args.noise}" if args.noise is not None else f"null rotation c={args.c}"
    print(f"{args.reps} replications, n={args.clips}, rho={args.rho}, {design}, B={args.resamples}")
    print(
        f"mean r(baseline, steered) = {rates['mean_r_base_steered']:.3f}; nominal rate {nominal:.3f} ± {se:.3f} (1 SE)"
    )
    for name, label in (
        ("bootstrap", "paired bootstrap CI excludes 0"),
        ("williams", "Williams p < alpha"),
        ("zou", "Zou CI excludes 0"),
    ):
        rate = rates[name]
        print(f"  {label:32s} {rate:.3f}  (SE {math.sqrt(rate * (1 - rate) / args.reps):.3f})")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
