"""Steering toward a chosen emotion: the toward-target statistics, the target's centre, the preset's map."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from steering.data import FeatureFile, split_indices, write_feature_file
from steering.data.binning import Binning
from steering.stats.toward_target import toward_target_metrics
from steering.sweep.columns import without_absent

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("valence", "arousal")
AXES = ("valence", "arousal", "share")


def _clips(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {t: rng.uniform(-1, 1, n) for t in TARGETS}


# -- the statistics --------------------------------------------------------------------------------


def test_an_unsteered_run_moved_nothing_toward_the_target():
    base = _clips()
    out = toward_target_metrics({"valence": 0.6, "arousal": -0.5}, base, {t: v.copy() for t, v in base.items()})
    for name in AXES:
        assert out[f"toward_target_{name}"] == 0.0
        assert out[f"toward_target_{name}_ci_low"] == 0.0 and out[f"toward_target_{name}_ci_high"] == 0.0
    for t in TARGETS:
        assert out[f"base_centroid_{t}"] == out[f"steered_centroid_{t}"] == pytest.approx(base[t].mean())


def test_halfway_toward_the_centre_halves_every_distance_and_moves_every_clip():
    centre = {"valence": 0.5, "arousal": 0.7}
    base = _clips(seed=1)
    steered = {t: base[t] + (centre[t] - base[t]) / 2 for t in TARGETS}
    out = toward_target_metrics(centre, base, steered, resamples=500)
    for t in TARGETS:
        assert out[f"toward_target_{t}"] == pytest.approx(np.mean(np.abs(base[t] - centre[t])) / 2)
        assert out[f"toward_target_{t}_ci_low"] < out[f"toward_target_{t}"] < out[f"toward_target_{t}_ci_high"]
        assert out[f"target_centre_{t}"] == centre[t]
        assert out[f"steered_centroid_{t}"] == pytest.approx((base[t].mean() + centre[t]) / 2)
    assert out["toward_target_share"] == 1.0
    away = toward_target_metrics(centre, base, {t: base[t] - (centre[t] - base[t]) for t in TARGETS})
    assert away["toward_target_valence"] < 0 and away["toward_target_arousal"] < 0
    assert away["toward_target_share"] == 0.0


def test_the_interval_is_paired_over_clips():
    """Every clip on one side of the centre, shifted toward it by 0.1: each clip's reduction is 0.1, so a
    paired bootstrap has no spread, although the distances themselves vary widely between clips."""
    rng = np.random.default_rng(2)
    base = {t: rng.uniform(-1, -0.5, 80) for t in TARGETS}
    steered = {t: v + 0.1 for t, v in base.items()}
    out = toward_target_metrics({"valence": 0.5, "arousal": 0.5}, base, steered, resamples=300, seed=3)
    for t in TARGETS:
        assert out[f"toward_target_{t}"] == pytest.approx(0.1)
        assert out[f"toward_target_{t}_ci_low"] == pytest.approx(0.1, abs=1e-12)
        assert out[f"toward_target_{t}_ci_high"] == pytest.approx(0.1, abs=1e-12)
    assert (out["toward_target_share_ci_low"], out["toward_target_share_ci_high"]) == (1.0, 1.0)
    # Half the clips moved: the share's interval has width and holds the estimate; the seed fixes it.
    steered = {t: np.where(np.arange(80) % 2 == 0, v + 0.1, v - 0.1) for t, v in base.items()}
    a = toward_target_metrics({"valence": 0.5, "arousal": 0.5}, base, steered, resamples=300, seed=3)
    assert a["toward_target_share"] == 0.5
    assert a["toward_target_share_ci_low"] < 0.5 < a["toward_target_share_ci_high"]
    assert a == toward_target_metrics({"valence": 0.5, "arousal": 0.5}, base, steered, resamples=300, seed=3)


def test_columns_a_sweep_never_logged_leave_the_table():
    table = pd.DataFrame({"dr_valence": [0.1, 0.2], "toward_target_share": [np.nan, np.nan], "coverage": [1, 1]})
    assert list(without_absent(table).columns) == ["dr_valence", "coverage"]
    table.loc[1, "toward_target_share"] = 0.4
    assert "toward_target_share" in without_absent(table)


# -- the target's centre in a run ------------------------------------------------------------------


def _evaluate(features: Path, checkpoint: Path, target: str, alpha: float = 1.0):
    from steering import load_model
    from steering.engine import SteeringSpec, select_connections
    from steering.evaluation import EvaluationInputs, EvaluationPlan, evaluate_configuration
    from steering.signals import extract_signals

    model = load_model(checkpoint)
    binning = dataclasses.replace(Binning.load(ROOT / "conf" / "binning" / "9bin.yaml"), min_samples=3)
    connections = select_connections(model.connections, "dual", "all")
    spec = SteeringSpec(connections, method="modulation", strength=1.0, alpha=alpha)
    plan = EvaluationPlan(spec=spec, category="fixed", fixed_target=target, bootstrap_resamples=100)
    with FeatureFile(features) as ff:
        signals = extract_signals(model, ff, split_indices(len(ff), "train"), binning, batch_size=16)
        inputs = EvaluationInputs(
            model, ff, split_indices(len(ff), "test"), signals, binning, torch.device("cpu"), "m", "d"
        )
        return evaluate_configuration(plan, inputs)


def test_the_centre_comes_from_training_clips_and_unsteered_runs_move_nothing(
    tmp_path, ref_checkpoint, make_feature_arrays
):
    feats, valence, arousal, names = make_feature_arrays(n=60, frames=32, seed=5)
    train, test = split_indices(60, "train"), split_indices(60, "test")
    first = _evaluate(
        write_feature_file(tmp_path / "a.h5", feats, valence, arousal, names), ref_checkpoint, "positive_strong"
    )
    # The evaluated clips' ratings move into the target category: the centre must not follow them.
    valence[test], arousal[test] = 0.95, 0.95
    second = _evaluate(
        write_feature_file(tmp_path / "b.h5", feats, valence, arousal, names), ref_checkpoint, "positive_strong"
    )
    own = train[(valence[train] > 0.3) & (arousal[train] > 0.3)]
    for result in (first, second):
        assert result.metrics["target_centre_valence"] == pytest.approx(valence[own].mean())
        assert result.metrics["target_centre_arousal"] == pytest.approx(arousal[own].mean())
    assert first.metrics["r_base_valence"] != second.metrics["r_base_valence"]  # the change reached the run
    assert first.metrics["toward_target_valence"] != 0.0  # steering with the target's signal moves predictions
    # alpha = 0 feeds each clip's own pass-1 activation through its own gains (modulation, s = 1).
    still = _evaluate(tmp_path / "a.h5", ref_checkpoint, "positive_strong", alpha=0.0)
    for name in AXES:
        assert still.metrics[f"toward_target_{name}"] == pytest.approx(0.0, abs=1e-6)
    assert still.metrics["toward_target_share"] == 0.0


# -- the preset's sweep and its map ----------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(sweep_assets):
    return sweep_assets


def test_the_targets_preset_logs_toward_target_and_draws_the_steering_map(assets, run_sweep, parent_and_children):
    chosen = ["positive_strong", "negative_weak"]
    proc, sweep_dir, uri = run_sweep(assets, "targets", "+experiment=targets", f"category.target={','.join(chosen)}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert sorted(table["category.target"]) == sorted(chosen)
    by_id = {c.info.run_id: c for c in children}
    for row in table.itertuples():
        metrics = by_id[row.run_id].data.metrics
        for name in ("toward_target_valence", "toward_target_share", "steered_centroid_arousal"):
            assert getattr(row, name) == pytest.approx(metrics[name])
        assert row.toward_target_share_ci_low <= row.toward_target_share <= row.toward_target_share_ci_high
    assert table["target_centre_valence"].nunique() == 2  # each target has its own centre
    assert table["base_centroid_valence"].nunique() == 1  # the same clips, the same baseline
    image = _imread(sweep_dir / "steering_map.png")
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert "steering_map.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "toward positive_strong: valence" in proc.stdout + proc.stderr


def _imread(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)
