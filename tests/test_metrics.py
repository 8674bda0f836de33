"""Metrics: published values for Williams' t and Zou's interval, scipy agreement, degenerate cases."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from steering.stats.metrics import (
    bootstrap_dr_samples,
    ccc,
    mae,
    paired_bootstrap_dr,
    pearson,
    target_metrics,
    williams_t,
    zou_ci,
)

KEYS = [
    "r_base_{t}",
    "r_steered_{t}",
    "dr_{t}",
    "dr_{t}_ci_low",
    "dr_{t}_ci_high",
    "dr_{t}_p",
    "dr_{t}_williams_p",
    "dr_{t}_zou_low",
    "dr_{t}_zou_high",
    "ccc_base_{t}",
    "ccc_steered_{t}",
    "mae_base_{t}",
    "mae_steered_{t}",
    "shift_{t}",
]


def _data(n=400, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    base = y + rng.normal(size=n)
    steered = base + noise * rng.normal(size=n) + 0.2
    return y, base, steered


def test_williams_published_value():
    # Steiger (1980) / Williams (1959) example as used in the issue.
    t, p = williams_t(0.3, 0.4, 0.5, 100)
    assert t == pytest.approx(-1.0767, abs=1e-4)
    assert p == pytest.approx(0.2843, abs=1e-4)


def test_williams_is_antisymmetric_and_zero_for_equal_correlations():
    t1, p1 = williams_t(0.4, 0.3, 0.5, 100)
    t2, p2 = williams_t(0.3, 0.4, 0.5, 100)
    assert t1 == pytest.approx(-t2) and p1 == pytest.approx(p2)
    t, p = williams_t(0.5, 0.5, 0.7, 50)
    assert t == 0 and p == pytest.approx(1.0)
    assert all(math.isnan(v) for v in williams_t(0.3, 0.4, 0.5, 3))


def test_zou_published_value():
    # Zou (2007), example 2: overlapping correlations, n = 66.
    low, high = zou_ci(0.396, 0.179, 0.088, 66)
    assert low == pytest.approx(-0.093, abs=5e-4)
    assert high == pytest.approx(0.517, abs=5e-4)


def test_zou_interval_contains_difference_and_widens_with_confidence():
    low95, high95 = zou_ci(0.6, 0.5, 0.7, 200)
    low99, high99 = zou_ci(0.6, 0.5, 0.7, 200, confidence=0.99)
    assert low95 < 0.1 < high95
    assert low99 < low95 and high99 > high95


def test_pearson_ccc_mae_against_definitions():
    y, base, _ = _data()
    assert pearson(base, y) == pytest.approx(stats.pearsonr(base, y).statistic)
    assert ccc(y, y) == pytest.approx(1.0)
    shifted = y + 1.0  # perfectly correlated but biased: CCC < r
    assert pearson(shifted, y) == pytest.approx(1.0)
    assert ccc(shifted, y) < 0.9
    assert ccc(shifted, y) == pytest.approx(2 * np.var(y) / (2 * np.var(y) + 1.0))
    assert mae(shifted, y) == pytest.approx(1.0)
    assert math.isnan(pearson(np.ones(10), np.arange(10)))


def test_bootstrap_pairs_indices_and_is_reproducible():
    y, base, steered = _data()
    a = paired_bootstrap_dr(y, base, steered, resamples=500, seed=3)
    b = paired_bootstrap_dr(y, base, steered, resamples=500, seed=3)
    assert a == b
    dr = pearson(steered, y) - pearson(base, y)
    assert a[0] < dr < a[1]
    # Same indices for both: identical predictions give exactly zero differences.
    assert np.all(bootstrap_dr_samples(y, base, base.copy(), resamples=200) == 0)
    # Paired resampling is much tighter than the sampling error of r itself (~0.03 here).
    assert a[1] - a[0] < 0.05


def test_bootstrap_interval_matches_loop_implementation():
    y, base, steered = _data(n=50, seed=1)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 50, size=(300, 50))
    loop = [stats.pearsonr(steered[i], y[i]).statistic - stats.pearsonr(base[i], y[i]).statistic for i in idx]
    vec = bootstrap_dr_samples(y, base, steered, resamples=300, seed=7)
    np.testing.assert_allclose(vec, loop, atol=1e-12)


def test_bootstrap_is_fast():
    y, base, steered = _data(n=400)
    start = time.perf_counter()
    paired_bootstrap_dr(y, base, steered, resamples=2000)
    assert time.perf_counter() - start < 1.0


def test_target_metrics_keys_and_values():
    y, base, steered = _data()
    m = target_metrics(y, base, steered, prefix_target="valence", resamples=300, confidence=0.95, seed=0)
    assert list(m) == [k.format(t="valence") for k in KEYS]
    assert m["dr_valence"] == pytest.approx(m["r_steered_valence"] - m["r_base_valence"])
    r_kh = pearson(steered, base)
    assert m["dr_valence_williams_p"] == pytest.approx(
        williams_t(m["r_steered_valence"], m["r_base_valence"], r_kh, 400)[1]
    )
    assert m["shift_valence"] == pytest.approx(np.mean(steered - base))
    assert m["dr_valence_zou_low"] < m["dr_valence"] < m["dr_valence_zou_high"]


def test_target_metrics_degenerate_cases():
    y, base, _ = _data()
    same = target_metrics(y, base, base.copy(), prefix_target="arousal", resamples=100, confidence=0.95, seed=0)
    assert same["dr_arousal"] == 0 and same["dr_arousal_p"] == 1 and same["dr_arousal_williams_p"] == 1
    for key in ("dr_arousal_ci_low", "dr_arousal_ci_high", "dr_arousal_zou_low", "dr_arousal_zou_high"):
        assert same[key] == 0
    const = target_metrics(y, base, np.zeros_like(y), prefix_target="arousal", resamples=100, confidence=0.95, seed=0)
    assert math.isnan(const["r_steered_arousal"]) and math.isnan(const["dr_arousal"])
    assert math.isnan(const["dr_arousal_p"]) and math.isnan(const["dr_arousal_ci_low"])
    assert const["mae_steered_arousal"] == pytest.approx(np.mean(np.abs(y)))
