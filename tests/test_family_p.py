"""The family p (issue 17): one p-value, the paired-bootstrap p, in every run, table, family and confirmation.

It must agree with the run's interval (same resamples), hold without normality (measured in
tests/test_calibration.py and benchmarks/calibration.py), and be what Holm/BH and the table read;
Williams' p stays as a secondary metric.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from steering.stats.family import bootstrap_p, family_p_column, permutation_dr_p
from steering.stats.metrics import bootstrap_dr_samples, pearson, target_metrics, williams_t
from steering.stats.multiplicity import add_adjusted_columns, describe_family, holm
from steering.stats.run_metrics import run_metrics
from steering.sweep import table as sweep_table
from steering.vocab import TARGETS


def _data(n: int, effect: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n)
    base = 0.6 * y + 0.8 * rng.standard_normal(n)
    steered = base + effect * (y - base) + 0.15 * rng.standard_normal(n)
    return y, base, steered


@pytest.mark.parametrize("effect", [0.0, 0.01, 0.03, 0.1])
def test_the_run_p_is_the_bootstrap_p_of_the_interval_resamples_and_agrees_with_the_interval(effect):
    y, base, steered = _data(150, effect, seed=3)
    m = target_metrics(y, base, steered, prefix_target="valence", resamples=999, confidence=0.95, seed=4)
    diffs = bootstrap_dr_samples(y, base, steered, 999, 4)
    assert m[family_p_column("valence")] == bootstrap_p(diffs)
    excludes_zero = m["dr_valence_ci_low"] > 0 or m["dr_valence_ci_high"] < 0
    assert (m["dr_valence_p"] <= 0.05) == excludes_zero
    assert m["dr_valence_williams_p"] == pytest.approx(
        williams_t(pearson(steered, y), pearson(base, y), pearson(steered, base), 150)[1]
    )


def test_bootstrap_p_is_two_sided_with_its_floor_and_undefined_without_samples():
    assert bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.concatenate([np.full(500, 1.0), np.full(500, -1.0)])) == 1.0
    assert bootstrap_p(np.array([-1.0] * 30 + [1.0] * 970)) == pytest.approx(2 * 31 / 1001)
    assert math.isnan(bootstrap_p(np.full(10, np.nan)))


def test_single_and_multi_draw_rows_carry_the_same_kind_of_p():
    y, base, steered = _data(120, 0.05, seed=5)
    masks = np.ones((1, 120), dtype=bool)
    single = run_metrics(
        {t: y for t in TARGETS},
        {t: base for t in TARGETS},
        {t: steered[None] for t in TARGETS},
        masks,
        resamples=500,
        confidence=0.95,
        seed=1,
    )
    assert single["dr_valence_p"] == bootstrap_p(bootstrap_dr_samples(y, base, steered, 500, 1))
    # two identical draws: the draw-mean is the single draw, so the same p
    double = run_metrics(
        {t: y for t in TARGETS},
        {t: base for t in TARGETS},
        {t: np.stack([steered, steered]) for t in TARGETS},
        np.ones((2, 120), dtype=bool),
        resamples=500,
        confidence=0.95,
        seed=1,
    )
    assert double["dr_valence_p"] == single["dr_valence_p"]
    assert "dr_valence_williams_p" in single and "dr_valence_williams_p" not in double


def _table() -> pd.DataFrame:
    rows = []
    for job, (p, williams) in enumerate([(0.001, 0.9), (0.5, 0.0001), (0.02, 0.02)]):
        row = {"job": job, "run_name": f"r{job}", "status": "FINISHED"}
        for t in TARGETS:
            row.update({f"dr_{t}": 0.01, family_p_column(t): p, f"dr_{t}_williams_p": williams})
        rows.append(row)
    return pd.DataFrame(rows)


def test_holm_and_bh_read_the_family_p_not_williams():
    out = add_adjusted_columns(_table())
    family = np.concatenate([_table()[family_p_column(t)].to_numpy() for t in TARGETS])
    expected = holm(family)
    assert list(out["dr_valence_p_holm"]) == pytest.approx(list(expected[:3]))
    assert list(out["dr_arousal_p_holm"]) == pytest.approx(list(expected[3:]))
    text = "\n".join(describe_family(out))
    assert "paired-bootstrap" in text and "Williams" not in text
    assert "job 1" not in text  # Williams' p of job 1 is tiny, its family p is not


def test_the_comparison_document_names_the_family_p():
    table = add_adjusted_columns(_table())
    table["run_id"], table["oracle"], table["error"] = "x", "false", ""
    text = sweep_table.describe(table, "sweep")
    assert "paired-bootstrap p" in text and "from Williams' t" not in text


def test_permutation_p_is_small_for_a_real_effect_and_not_for_identical_predictions():
    y, base, steered = _data(200, 0.2, seed=6)
    assert permutation_dr_p(y, base, steered, 999, seed=0) < 0.01
    assert permutation_dr_p(y, base, base.copy(), 999, seed=0) == 1.0


def test_the_method_is_chosen_in_one_place(monkeypatch):
    """Setting FAMILY_P_METHOD switches the p of single- and multi-draw runs alike (and nothing else)."""
    from steering.stats import family

    y, base, steered = _data(120, 0.02, seed=8)
    ratings, bases = {t: y for t in TARGETS}, {t: base for t in TARGETS}
    kwargs = {"resamples": 400, "confidence": 0.95, "seed": 3}
    single = run_metrics(ratings, bases, {t: steered[None] for t in TARGETS}, np.ones((1, 120), bool), **kwargs)
    draws = np.stack([steered, base + 0.5 * (steered - base)])
    multi = run_metrics(ratings, bases, {t: draws for t in TARGETS}, np.ones((2, 120), bool), **kwargs)
    monkeypatch.setattr(family, "FAMILY_P_METHOD", "permutation")
    single_perm = run_metrics(ratings, bases, {t: steered[None] for t in TARGETS}, np.ones((1, 120), bool), **kwargs)
    multi_perm = run_metrics(ratings, bases, {t: draws for t in TARGETS}, np.ones((2, 120), bool), **kwargs)
    assert single_perm["dr_valence_p"] == permutation_dr_p(y, base, steered, 400, 3) != single["dr_valence_p"]
    assert multi_perm["dr_valence_p"] == permutation_dr_p(y, base, draws, 400, 3) != multi["dr_valence_p"]
    for key in ("dr_valence", "dr_valence_ci_low", "dr_valence_ci_high", "dr_valence_williams_p"):
        assert single_perm[key] == single[key]


def test_permutation_p_of_identical_draws_is_that_of_one_draw():
    y, base, steered = _data(90, 0.05, seed=9)
    one = permutation_dr_p(y, base, steered, 500, seed=4)
    assert permutation_dr_p(y, base, np.stack([steered, steered]), 500, seed=4) == one
