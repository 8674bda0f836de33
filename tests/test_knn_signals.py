"""``signals.method=knn``: each evaluated clip's signal is the mean activation of its k nearest split clips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from steering.signals import SignalSet
from steering.signals.knn import knn_signals
from steering.tracking.job import evaluate
from steering.vocab import PATHWAYS

BINNING_9 = Path(__file__).resolve().parents[1] / "conf" / "binning" / "9bin.yaml"


def _acts(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p: np.maximum(rng.normal(0.3, 1.0, (n, 128)), 0.0) for p in PATHWAYS}


def _nearest_by_brute_force(query: dict, reference: dict, k: int) -> dict[str, np.ndarray]:
    """The k nearest reference rows per query row, by explicit differences in the joint space."""
    q = np.concatenate([query[p] for p in PATHWAYS], axis=1)
    r = np.concatenate([reference[p] for p in PATHWAYS], axis=1)
    dist = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(axis=2))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return {p: reference[p][order].mean(axis=1) for p in PATHWAYS}


@pytest.mark.parametrize("k", [40, 41, 1000])
def test_k_of_all_split_clips_is_the_grand_mean_of_the_category_means(k):
    reference, query = _acts(40, 0), _acts(7, 1)
    labels = np.repeat(["a", "b", "c", "d"], [5, 9, 11, 15])  # every category has a signal
    signals = SignalSet(
        "four",
        {c: {p: reference[p][labels == c].mean(axis=0) for p in PATHWAYS} for c in "abcd"},
        counts={c: int((labels == c).sum()) for c in "abcd"},
    )
    out = knn_signals(query, reference, k)
    for p in PATHWAYS:
        assert out[p].shape == (7, 128) and out[p].dtype == np.float32
        assert np.allclose(out[p], signals.grand_mean(p)[None, :], atol=1e-6)
        assert np.allclose(out[p], reference[p].mean(axis=0), atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 39])
def test_k_nearest_split_clips_by_distance_in_both_pathways(k):
    reference, query = _acts(40, 2), _acts(25, 3)
    expected = _nearest_by_brute_force(query, reference, k)
    whole = knn_signals(query, reference, k)
    chunked = knn_signals(query, reference, k, max_bytes=1)  # one query row at a time
    for p in PATHWAYS:
        assert np.allclose(whole[p], expected[p], atol=1e-6)
        assert np.allclose(chunked[p], whole[p], rtol=0, atol=1e-9)
    if k == 1:  # the individual end of the axis: some split clip's own activation
        for p in PATHWAYS:
            assert all(np.isclose(reference[p], row, atol=1e-6).all(axis=1).any() for row in whole[p])


def test_equally_distant_split_clips_are_taken_in_index_order():
    query = {p: np.zeros((1, 128)) for p in PATHWAYS}
    reference = {p: np.zeros((3, 128)) for p in PATHWAYS}
    for i, unit in enumerate((5, 2, 9)):  # three clips at distance 2 from the query, all different
        reference["valence"][i, unit] = 2.0
    one = knn_signals(query, reference, 1)
    assert one["valence"][0, 5] == 2.0 and one["valence"].sum() == 2.0  # the first of the tied clips
    two = knn_signals(query, reference, 2)
    assert two["valence"][0, 5] == 1.0 and two["valence"][0, 2] == 1.0 and two["valence"][0, 9] == 0.0


def test_an_evaluated_clip_is_never_its_own_neighbour(assets):
    """Signals from ``all`` clips: the evaluated ones are left out, so k = 1 never returns a clip's own activation."""
    from steering import load_model
    from steering.data import FeatureFile, split_indices
    from steering.data.binning import Binning
    from steering.engine import SteeringSpec, select_connections
    from steering.evaluation import EvaluationInputs, EvaluationPlan, assign, shared_work
    from steering.signals import extract_signals, pass1_activations

    model = load_model(assets["checkpoint"])
    binning = dataclasses.replace(Binning.load(BINNING_9), min_samples=3)
    spec = SteeringSpec(select_connections(model.connections, "valence", "conv4"), method="bypass", strength=2.0)
    plan = EvaluationPlan(spec=spec, category="mean", signals_split="all", signals_method="knn", knn_k=1)
    with FeatureFile(assets["features"]) as ff:
        every = split_indices(len(ff), "all")
        signals = extract_signals(model, ff, every, binning, batch_size=16)
        eval_idx = split_indices(len(ff), "val")
        inputs = EvaluationInputs(model, ff, eval_idx, signals, binning, torch.device("cpu"), "m", "d")
        work = shared_work(plan, inputs)
        true_cats = binning.categorize(work.ratings["valence"], work.ratings["arousal"])
        (chosen,) = assign(plan, inputs, work, true_cats)
        acts = pass1_activations(model, ff, every, batch_size=16)
    evaluated = np.isin(every, eval_idx)
    assert chosen.mask.all() and set(chosen.labels) == {"knn"}
    for p in PATHWAYS:
        joint = chosen.vectors[p].astype(np.float64)
        near = np.abs(joint[:, None, :] - acts[p][None, :, :]).max(axis=2) < 1e-5  # (evaluated, all clips)
        assert near[:, ~evaluated].any(axis=1).all()  # each signal is some non-evaluated clip's activation
        own = np.abs(joint - acts[p][evaluated]).max(axis=1)
        assert (own > 1e-3).all()  # and never the clip's own


def test_a_knn_run_steers_every_clip_without_labels_and_differs_from_mean(assets, compose_run):
    common = ("method=bypass", "strength=2", "category=mean")
    knn = evaluate(compose_run(*common, "signals.method=knn", "signals.k=3"))
    mean = evaluate(compose_run(*common, "signals.method=mean"))
    pred = knn.predictions
    assert pred["steered"].all() and set(pred["signal"]) == {"knn"}
    assert knn.metrics["coverage"] == 1.0 and knn.tags["oracle"] == "false"
    assert not np.allclose(pred["steered_valence"], mean.predictions["steered_valence"])
    assert np.array_equal(pred["base_valence"], mean.predictions["base_valence"])  # the same clips and baseline


@pytest.mark.parametrize(
    "variant", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "signal_variant").glob("*.yaml"))
)
def test_every_signal_variant_composes_and_knn_reads_no_label(compose_config, variant):
    """The preset's variants: each composes into the run schema; knn's mode steers every clip and reads no rating."""
    from steering.engine.categories import category_mode

    cfg = compose_config(f"+signal_variant={variant}")
    assert variant.startswith(cfg.signals.method)
    mode = category_mode(cfg.category.name)
    if cfg.signals.method == "knn":
        assert not mode.oracle and not mode.multi_draw and not mode.per_sample and mode.needs <= {"grand_mean"}
    elif variant.endswith("_predicted"):  # the label-free conditions: the model's own category, no rating read
        assert not mode.oracle and mode.per_sample and "predicted" in mode.needs
    else:
        assert mode.oracle  # the category conditions of the preset: each clip's own category
