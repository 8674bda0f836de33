"""The Δr intervals are calibrated: under null steering a 95 % interval excludes 0 about 5 % of the time.

The full check (1000 replications, 2000 resamples) is ``python benchmarks/calibration.py``; this
is a small version of it (200 replications: a rate of 0.05 has a standard error of 0.015).
"""

from __future__ import annotations

import numpy as np

from benchmarks.calibration import null_predictions, null_rejection_rates
from steering.stats.metrics import pearson


def test_null_design_keeps_the_correlation_and_adds_rating_free_noise():
    y, base, steered = null_predictions(np.random.default_rng(0), 200_000, rho=0.6, c=0.9)
    assert abs(pearson(steered, y) - pearson(base, y)) < 0.01
    assert abs(pearson(steered - base, y)) < 0.01  # the added noise does not depend on the ratings
    assert abs(pearson(steered, base) - (0.36 + 0.64 * 0.9)) < 0.01


def test_paired_bootstrap_and_williams_reject_about_five_percent_under_the_null():
    rates = null_rejection_rates(reps=200, n=182, resamples=300, seed=1)
    assert 0.01 <= rates["bootstrap"] <= 0.10
    assert 0.01 <= rates["williams"] <= 0.10
    assert rates["zou"] <= 0.10


def test_the_check_detects_a_real_effect():
    # plain independent noise lowers r(steered, y): not a null, so the intervals exclude 0 far more often
    rates = null_rejection_rates(reps=100, n=182, resamples=300, noise=0.5, seed=2)
    assert rates["bootstrap"] > 0.5 and rates["williams"] > 0.5
