"""Controls that match what they control, and the per-run metrics of issue 9."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from steering.data import FeatureFile, split_indices, write_feature_file
from steering.data.binning import Binning
from steering.engine.categories import (
    CATEGORY_MODES,
    CategoryMode,
    GaussianReference,
    assign_draws,
    assign_signals,
    register_category,
    shuffled_labels,
)
from steering.stats.metrics import pearson
from steering.tracking.job import evaluate

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _steered_signals(pred) -> Counter:
    return Counter(pred.loc[pred.steered, "signal"])


def _dr(pred, t, col):
    return pearson(pred[col], pred[t]) - pearson(pred[f"base_{t}"], pred[t])


# --------------------------------------------------------------------------- shuffled
def test_shuffled_keeps_the_oracle_coverage_and_mix_of_signals(assets, compose_run):
    common = ("method=bypass", "strength=2", "binning.min_samples=8")  # some categories get no signal
    oracle = evaluate(compose_run(*common, "category=oracle"))
    shuffled = evaluate(compose_run(*common, "category=shuffled", "category.draws=4"))
    po, ps = oracle.predictions, shuffled.predictions
    assert 0 < oracle.metrics["coverage"] < 1
    assert shuffled.metrics["coverage"] == oracle.metrics["coverage"]
    assert list(ps.steered) == list(po.steered)
    assert _steered_signals(ps) == _steered_signals(po)  # the oracle's multiset of signals
    moved = (ps.signal != ps.category)[ps.steered]
    assert moved.mean() > 0.5  # a permutation that mostly gives clips another category's signal
    assert shuffled.metrics["category_accuracy"] == pytest.approx(1 - moved.mean(), abs=0.15)  # mean of 4 draws
    assert oracle.metrics["category_accuracy"] == pytest.approx(oracle.metrics["coverage"])
    # Four draws: one column pair each; dr is their mean, the spread is reported beside it.
    drs = [_dr(ps, "valence", f"steered_valence_draw{k}") for k in range(4)]
    assert shuffled.metrics["dr_valence"] == pytest.approx(np.mean(drs), abs=1e-6)
    assert shuffled.metrics["dr_valence_draws_sd"] == pytest.approx(np.std(drs, ddof=1), abs=1e-6)
    assert shuffled.metrics["dr_valence_draws_min"] == pytest.approx(min(drs), abs=1e-6)
    assert np.allclose(ps.steered_valence, ps.steered_valence_draw0)
    assert shuffled.metrics["draws"] == 4 and "draws" not in oracle.metrics
    low, high = shuffled.metrics["dr_valence_ci_low"], shuffled.metrics["dr_valence_ci_high"]
    assert low <= shuffled.metrics["dr_valence"] <= high and 0 < shuffled.metrics["dr_valence_p"] <= 1
    assert len({tuple(ps[f"steered_valence_draw{k}"].round(6)) for k in range(4)}) == 4  # draws differ


def test_shuffled_labels_derange_when_possible_and_keep_the_multiset():
    rng = np.random.default_rng(0)
    own = np.array(["a"] * 30 + ["b"] * 30 + ["c"] * 20 + ["x"] * 5, dtype=object)
    covered = own != "x"
    for _ in range(20):
        labels = shuffled_labels(own, covered, rng)
        assert Counter(labels[covered]) == Counter(own[covered]) and (labels[~covered] == "").all()
        assert not (labels[covered] == own[covered]).any()  # balanced enough: a full derangement
    skewed = np.array(["a"] * 90 + ["b"] * 10, dtype=object)
    labels = shuffled_labels(skewed, np.ones(100, bool), rng)
    assert Counter(labels) == Counter(skewed)
    assert (labels == skewed).sum() == 80  # at most 20 clips can leave a 90 % category


# --------------------------------------------------------------------------- random
def test_random_draws_from_the_signal_split_and_never_go_negative(assets, monkeypatch, compose_run):
    from steering.signals import reference

    seen = {}
    real = reference.pass1_activations

    def spy(model, ff, indices, **kwargs):
        seen["indices"] = np.asarray(indices)
        return real(model, ff, indices, **kwargs)

    monkeypatch.setattr(reference, "pass1_activations", spy)
    result = evaluate(compose_run("method=bypass", "strength=2", "category=random", "category.draws=3"))
    with FeatureFile(assets["features"]) as ff:
        train, test = split_indices(len(ff), "train"), split_indices(len(ff), "test")
    assert set(seen["indices"].tolist()) == set(train.tolist())  # the split the signals come from
    assert not set(seen["indices"].tolist()) & set(test.tolist())
    assert result.metrics["coverage"] == 1.0 and result.metrics["category_accuracy"] == 0.0
    assert {f"steered_arousal_draw{k}" for k in range(3)} <= set(result.predictions.columns)
    # A second run reads the activations from the cache instead of running pass 1 again.
    seen.clear()
    again = evaluate(compose_run("method=bypass", "strength=2", "category=random", "category.draws=3"))
    assert "indices" not in seen
    assert again.metrics["dr_valence"] == pytest.approx(result.metrics["dr_valence"])


def test_random_vectors_follow_the_reference_and_are_non_negative():
    rng = np.random.default_rng(1)
    ref = {p: np.maximum(rng.normal(0.2, 1.0, size=(400, 128)), 0) for p in ("valence", "arousal")}
    table = {"a": {"valence": np.ones(128), "arousal": np.ones(128)}}
    cats = np.array(["a"] * 500, dtype=object)
    one = assign_signals(
        "random",
        table=table,
        true_categories=cats,
        predicted_categories=cats,
        reference=GaussianReference.from_activations(ref),
        seed=3,
    )
    for p in ("valence", "arousal"):
        assert (one.vectors[p] >= 0).all() and (one.vectors[p] == 0).mean() > 0.2
        # clipping only raises values, so the draws' mean is at least the reference mean (within noise)
        assert one.vectors[p].mean() >= ref[p].mean() - 0.05
    draws = assign_draws(
        "random",
        draws=3,
        seed=3,
        table=table,
        true_categories=cats,
        predicted_categories=cats,
        reference=GaussianReference.from_activations(ref),
    )
    assert len(draws) == 3 and not np.array_equal(draws[0].vectors["valence"], draws[1].vectors["valence"])
    again = assign_draws(
        "random",
        draws=5,
        seed=3,
        table=table,
        true_categories=cats,
        predicted_categories=cats,
        reference=GaussianReference.from_activations(ref),
    )
    np.testing.assert_array_equal(again[2].vectors["valence"], draws[2].vectors["valence"])  # draw k is stable


# --------------------------------------------------------------------------- predicted
def test_predicted_takes_its_categories_from_the_final_or_pass1_prediction(assets, compose_run):
    binning = Binning.load(CONF + "/binning/9bin.yaml")
    final = evaluate(compose_run("method=bypass", "strength=2", "category=predicted"))
    pred = final.predictions
    expected = binning.categorize(pred.base_valence.to_numpy(), pred.base_arousal.to_numpy())
    assert (pred.signal[pred.steered] == expected[pred.steered.to_numpy()]).all()
    accuracy = ((pred.signal == pred.category) & pred.steered).mean()
    assert final.metrics["category_accuracy"] == pytest.approx(accuracy)
    from hydra.errors import ConfigCompositionException

    # The schema refuses it when composing, before any work.
    with pytest.raises((ValueError, ConfigCompositionException), match="category.source"):
        evaluate(compose_run("category=predicted", "category.source=labels"))


def test_predicted_category_source_selects_the_prediction(assets, compose_run):
    from steering.evaluation import predicted_categories

    binning = Binning.load(CONF + "/binning/9bin.yaml")
    first = {"valence": np.array([[0.9], [-0.9]]), "arousal": np.array([[0.0], [0.0]])}
    base = {"valence": np.array([-0.9, 0.0]), "arousal": np.array([0.9, 0.9])}
    final = compose_run("category=predicted").category.source
    assert list(predicted_categories(final, binning, first, base)) == ["negative_strong", "neutral_strong"]
    pass1 = compose_run("category=predicted", "category.source=pass1").category.source
    assert list(predicted_categories(pass1, binning, first, base)) == ["positive_moderate", "negative_moderate"]


def test_a_category_taking_most_clips_is_warned_about(assets, compose_run, make_feature_arrays, caplog):
    # Ratings that vary but all fall in 9bin's neutral_moderate cell: every evaluated clip gets that category.
    feats, _, _, names = make_feature_arrays(n=120, frames=32, seed=5)
    rng = np.random.default_rng(0)
    valence, arousal = (rng.uniform(-0.25, 0.25, len(names)).astype(np.float32) for _ in range(2))
    neutral = write_feature_file(assets["tmp"] / "neutral.h5", feats, valence, arousal, names)
    with caplog.at_level(logging.WARNING):
        evaluate(compose_run("category=oracle", f"data.path={neutral}"))
    assert "category=oracle: neutral_moderate takes 100%" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        evaluate(compose_run("category=oracle"))  # ratings spread over the cells
        evaluate(compose_run("category=fixed", f"data.path={neutral}"))  # one category by design
    assert "takes" not in caplog.text


# --------------------------------------------------------------------------- mean
def test_mean_control_without_samples_count_is_unweighted_not_nan(assets, tmp_path, caplog, compose_run):
    first = evaluate(compose_run("category=oracle"))
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    path = client.download_artifacts(first.run_id, "signals_9bin.json", str(tmp_path))
    raw = json.loads(Path(path).read_text())
    for entry in raw.values():
        if isinstance(entry, dict) and "valence_128d" in entry:
            entry.pop("samples_count", None)
    stripped = tmp_path / "no_counts.json"
    stripped.write_text(json.dumps({k: v for k, v in raw.items() if k != "metadata"}))
    with caplog.at_level(logging.WARNING):
        result = evaluate(compose_run("method=bypass", "strength=2", "category=mean", f"signals.path={stripped}"))
    assert "unweighted" in caplog.text
    assert np.isfinite(result.predictions.steered_valence).all()
    assert np.isfinite(result.metrics["dr_valence"]) and np.isfinite(result.metrics["dr_valence_ci_low"])


# --------------------------------------------------------------------------- per-run metrics
def test_improved_share_and_steered_only_dr(assets, compose_run):
    partial = evaluate(compose_run("method=bypass", "strength=2", "binning.min_samples=8"))
    pred, m = partial.predictions, partial.metrics
    assert m["coverage"] < 1
    s = pred[pred.steered]
    for t in ("valence", "arousal"):
        improved = (abs(s[f"steered_{t}"] - s[t]) < abs(s[f"base_{t}"] - s[t])).mean()
        assert m[f"improved_share_{t}"] == pytest.approx(improved)
        assert m[f"dr_{t}_steered_only"] == pytest.approx(_dr(s, t, f"steered_{t}"), abs=1e-6)
    full = evaluate(compose_run("method=bypass", "strength=2", "category=mean"))
    assert full.metrics["coverage"] == 1 and "dr_valence_steered_only" not in full.metrics
    assert 0 <= full.metrics["improved_share_valence"] <= 1


# --------------------------------------------------------------------------- the registry of modes
def test_a_mode_that_declares_no_role_is_refused_when_registered():
    """A control without a role would vanish from contrasts.csv: registration refuses it instead."""

    class Orphan(CategoryMode):
        name = "orphan"

    class Nameless(CategoryMode):
        role = "control"

    for mode in (Orphan, Nameless):
        with pytest.raises(TypeError, match="role|name"):
            register_category(mode)
    assert "orphan" not in CATEGORY_MODES


@pytest.mark.parametrize("mode", sorted(CATEGORY_MODES))
def test_every_mode_steers_as_it_declares(mode):
    """Oracle modes read the ratings, multi-draw modes differ between draws, category signals carry their name."""
    rng = np.random.default_rng(0)
    table = {c: {p: rng.random(128).astype(np.float32) for p in ("valence", "arousal")} for c in "abc"}
    true = np.array(list("abcabcabca"), dtype=object)
    inputs = dict(
        table=table,
        true_categories=true,
        predicted_categories=np.array(list("cabcabcabc"), dtype=object),
        reference=GaussianReference.from_activations({p: rng.random((20, 128)) for p in ("valence", "arousal")}),
        grand_mean={p: np.mean([v[p] for v in table.values()], axis=0) for p in ("valence", "arousal")},
        fixed_target="b",
    )
    declared = CATEGORY_MODES[mode]
    first, second = assign_draws(mode, draws=2, seed=1, **inputs) + ([] if declared.multi_draw else [None])
    assert first.oracle == declared.oracle
    if declared.multi_draw:
        assert not np.array_equal(first.vectors["valence"], second.vectors["valence"])
    again = assign_draws(mode, draws=2, seed=1, **inputs)[0]
    np.testing.assert_array_equal(again.vectors["arousal"], first.vectors["arousal"])
    relabelled = assign_draws(mode, draws=2, seed=1, **{**inputs, "true_categories": true[::-1].copy()})[0]
    reads_ratings = not np.array_equal(relabelled.vectors["valence"], first.vectors["valence"])
    assert reads_ratings == declared.oracle
    assert set(first.labels[first.mask]) <= set(table) if declared.of_a_category else not set(first.labels) & set(table)
