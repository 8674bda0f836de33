"""The Δr intervals and the family p are calibrated: under null steering a 95 % interval excludes 0,
and a test at 0.05 rejects, about 5 % of the time, with normal and with heavy-tailed noise.

The full check (2,000 replications per noise, 2,000 resamples) is ``python benchmarks/calibration.py
--distribution ...``; these are small versions of it (a rate of 0.05 over 200 replications has a
standard error of 0.015).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.calibration import (
    DISTRIBUTIONS,
    bootstrap_samples,
    null_predictions,
    null_rejection_rates,
    permutation_ps,
    standard_noise,
)
from steering.stats.family import FAMILY_P_METHOD, bootstrap_p, permutation_dr_p
from steering.stats.metrics import bootstrap_dr_samples, pearson, target_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_null_design_keeps_the_correlation_and_adds_rating_free_noise(distribution):
    noise = standard_noise(np.random.default_rng(0), distribution, 400_000)
    assert abs(noise.mean()) < 0.01 and abs(noise.var() - 1) < 0.05
    y, base, steered = null_predictions(np.random.default_rng(0), 200_000, rho=0.6, c=0.9, distribution=distribution)
    assert abs(pearson(steered, y) - pearson(base, y)) < 0.01
    assert abs(pearson(steered - base, y)) < 0.01  # the added noise does not depend on the ratings
    assert abs(pearson(steered, base) - (0.36 + 0.64 * 0.9)) < 0.01


def test_the_benchmark_scores_the_runs_own_resamples_and_permutations():
    y, base, steered = null_predictions(np.random.default_rng(3), 60, rho=0.6, c=0.9, distribution="t3")
    fast = bootstrap_samples(y, base, steered, 300, seed=7)
    np.testing.assert_allclose(fast, bootstrap_dr_samples(y, base, steered, 300, seed=7), atol=1e-10)
    m = target_metrics(y, base, steered, prefix_target="valence", resamples=300, seed=7)
    assert m["dr_valence_p"] == bootstrap_p(fast)  # what the benchmark rates is the p the run logs
    assert permutation_ps(y, base, steered, 300, seed=2) == permutation_dr_p(y, base, steered, 300, seed=2)


def test_family_p_and_bootstrap_reject_about_five_percent_under_the_normal_null():
    rates = null_rejection_rates(reps=200, n=182, resamples=300, seed=1)
    assert rates["family"] == rates[FAMILY_P_METHOD]
    for key in ("bootstrap_ci", "bootstrap", "permutation", "williams"):
        assert 0.01 <= rates[key] <= 0.10, key
    assert rates["zou_ci"] <= 0.10


def test_under_heavy_tailed_noise_the_family_p_holds_where_williams_does_not():
    rates = null_rejection_rates(reps=300, n=182, resamples=300, seed=4, distribution="t3")
    assert rates["family"] <= 0.09
    assert rates["williams"] > rates["family"] + 0.02


def test_the_check_detects_a_real_effect():
    # plain independent noise lowers r(steered, y): not a null, so the intervals exclude 0 far more often
    rates = null_rejection_rates(reps=100, n=182, resamples=300, noise=0.5, seed=2)
    assert rates["bootstrap_ci"] > 0.5 and rates["family"] > 0.5 and rates["williams"] > 0.5


def test_the_command_ends_with_the_family_p_rate():
    cmd = [sys.executable, "benchmarks/calibration.py", "--distribution", "bounded", "--reps", "40"]
    out = subprocess.run(
        [*cmd, "--resamples", "200", "--seed", "9"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"family p: \d+\.\d %", lines[-1])
    assert any("Williams p" in line for line in lines) and any("Zou interval" in line for line in lines)
