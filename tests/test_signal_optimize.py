"""``signals.method=optimized`` and the label controls ``signals.labels=permuted|none`` (docs/signals.md).

Fitted signals must lower the loss they are fitted on, never see the true clip-rating pairing
under ``permuted``, be the same bit for bit for a seed, keep every evaluated clip out of fitting
and stopping, and be refused in one line where a combination of options cannot work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from steering.assets.learned_signals import make_signals
from steering.assets.validation import check_run_options
from steering.config.schema import OptimizeConf
from steering.data import FeatureFile, split_indices
from steering.data.binning import Binning
from steering.engine import SteeringSpec, select_connections
from steering.engine.core import steer_direct
from steering.errors import ConfigError
from steering.signals import cache_key
from steering.signals.recipe import SignalRecipe
from steering.signals.signalset import PATHWAYS
from steering.tracking.job import evaluate

ROOT = Path(__file__).resolve().parents[1]
FAST = OptimizeConf(steps=15, step_sizes=(0.05,), patience=15, holdout=0.25)


@pytest.fixture(scope="module")
def binning(compose_config) -> Binning:
    """The 9-bin scheme with room for the 40 clips of ``feature_file`` (2 clips make a category)."""
    from omegaconf import OmegaConf

    return Binning.from_conf(OmegaConf.to_object(compose_config("binning.min_samples=2").binning))


def _spec(model, pathway: str = "valence", layer: str = "conv4") -> SteeringSpec:
    return SteeringSpec(select_connections(model.connections, pathway, layer))


def _make(model, ff, binning: Binning, recipe: SignalRecipe, spec: SteeringSpec):
    return make_signals(
        model,
        ff,
        np.arange(len(ff)),
        binning,
        recipe,
        spec,
        batch_size=8,
        device=torch.device("cpu"),
        cache_dir=None,
        provenance={"checkpoint_hash": "model", "data_hash": "data", "split": "train"},
    )


def _loss(model, ff, binning: Binning, signals, spec, clips: np.ndarray) -> float:
    """MSE over both targets of the steered predictions (whole passes) of ``clips``, each steered with the
    signal of the category its ratings put it in."""
    batch = ff.read(clips)
    cats = binning.categorize(batch.valence.numpy(), batch.arousal.numpy())
    sig = {p: torch.tensor(np.stack([signals.vector(c, p) for c in cats]), dtype=torch.float32) for p in PATHWAYS}
    out = steer_direct(model, batch.features, spec, sig, torch.ones(len(clips), dtype=torch.bool))
    err = (out["valence"] - batch.valence) ** 2 + (out["arousal"] - batch.arousal) ** 2
    return float(err.mean() / 2)


def test_optimized_lowers_the_training_loss_below_the_category_means(tiny_model, feature_file, binning):
    """Checked with whole passes (steer_direct), not the fit's own shared-work forward."""
    spec = _spec(tiny_model)
    with FeatureFile(feature_file) as ff:
        mean = _make(tiny_model, ff, binning, SignalRecipe(labels="observed"), spec)
        fitted = _make(tiny_model, ff, binning, SignalRecipe(method="optimized", optimize=FAST), spec)
        fit = fitted.metadata["fit"]
        assert fit["step"] > 0, "no step beat the category means on the held-out clips"
        clips = np.asarray(fitted.metadata["fit_indices"])
        before, after = (
            _loss(tiny_model, ff, binning, mean, spec, clips),
            _loss(tiny_model, ff, binning, fitted, spec, clips),
        )
    assert after < before
    assert fit["train_loss"] == pytest.approx(after, rel=1e-4)
    assert fit["train_loss_start"] == pytest.approx(before, rel=1e-4)
    # the unsteered pathway keeps its category mean
    for cat in fitted.categories:
        np.testing.assert_array_equal(fitted.vector(cat, "arousal"), mean.vector(cat, "arousal"))
        assert not np.array_equal(fitted.vector(cat, "valence"), mean.vector(cat, "valence"))


def test_the_same_seed_gives_the_same_vectors_bit_for_bit(tiny_model, feature_file, binning):
    spec = _spec(tiny_model, "arousal", "conv2")  # through conv blocks, not the pooled shortcut
    recipe = SignalRecipe(method="optimized", optimize=OptimizeConf(steps=4, step_sizes=(0.05, 0.1), patience=4))
    with FeatureFile(feature_file) as ff:
        first, second = _make(tiny_model, ff, binning, recipe, spec), _make(tiny_model, ff, binning, recipe, spec)
        other = _make(tiny_model, ff, binning, SignalRecipe(method="optimized", seed=1, optimize=recipe.optimize), spec)
    assert first.metadata["fit"]["step"] > 0
    for cat in first.categories:
        for p in PATHWAYS:
            assert first.vector(cat, p).tobytes() == second.vector(cat, p).tobytes()
    assert first.fingerprint() == second.fingerprint()
    assert first.metadata["stop_indices"] != other.metadata["stop_indices"]


def test_permuted_labels_never_reach_the_fit_paired_with_their_clips(tiny_model, feature_file, binning, monkeypatch):
    """The ratings the fit is given are the split's ratings moved between clips, and so are its groups."""
    import steering.assets.learned_signals as learned

    seen = {}
    real_fit = learned.fit_vectors

    def spy(problem, settings):
        seen["problem"] = problem
        return real_fit(problem, settings)

    monkeypatch.setattr(learned, "fit_vectors", spy)
    with FeatureFile(feature_file) as ff:
        signals = _make(
            tiny_model,
            ff,
            binning,
            SignalRecipe(method="optimized", labels="permuted", optimize=FAST),
            _spec(tiny_model),
        )
        true = np.stack([ff.valence, ff.arousal], axis=1).astype(np.float64)
    problem, meta = seen["problem"], signals.metadata
    clips = np.asarray(meta["indices"])  # the fitted and held-out clips, in the fit's row order
    source = np.asarray(meta["ratings_from"])[clips]  # the split is the whole file here: position = index
    given = problem.targets
    np.testing.assert_array_equal(given, true[source])  # each clip is given another clip's ratings ...
    assert np.mean(source == clips) < 0.2
    own = np.all(given == true[clips], axis=1)
    np.testing.assert_array_equal(own, source == clips)  # ... and its own only where the permutation left it
    groups = binning.categorize(given[:, 0], given[:, 1])  # the groups come from the permuted ratings too
    assert [signals.categories[g] for g in problem.groups] == groups.tolist()


def test_no_labels_give_one_vector_to_every_category(tiny_model, feature_file, binning):
    spec = _spec(tiny_model)
    with FeatureFile(feature_file) as ff:
        grand = _make(tiny_model, ff, binning, SignalRecipe(labels="none"), spec)
        fitted = _make(tiny_model, ff, binning, SignalRecipe(method="optimized", labels="none", optimize=FAST), spec)
        with torch.no_grad():
            acts = tiny_model.feedforward(ff.read(np.arange(len(ff))).features)["valence_128d"].double().numpy()
    for signals in (grand, fitted):
        assert signals.categories == binning.categories
        for p in PATHWAYS:
            assert len({signals.vector(c, p).tobytes() for c in signals.categories}) == 1
    np.testing.assert_allclose(grand.vector("positive_strong", "valence"), acts.mean(0), rtol=1e-5)
    assert fitted.metadata["fit"]["step"] > 0
    assert not np.array_equal(fitted.vector("neutral_moderate", "valence"), grand.vector("neutral_moderate", "valence"))


@pytest.mark.parametrize("eval_split", ["test", "val"])
def test_no_evaluated_clip_enters_fitting_or_stopping(assets, compose_run, eval_split):
    fast = ["signals.optimize.steps=3", "signals.optimize.step_sizes=[0.05]"]
    result = evaluate(compose_run("signals.method=optimized", f"data.eval_split={eval_split}", *fast))
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    meta = json.loads(
        Path(client.download_artifacts(result.run_id, "signals_9bin.json", str(assets["tmp"]))).read_text()
    )["metadata"]
    with FeatureFile(assets["features"]) as ff:
        evaluated = set(split_indices(len(ff), eval_split).tolist())
    fit, stop = set(meta["fit_indices"]), set(meta["stop_indices"])
    assert fit and stop and not fit & stop and set(meta["indices"]) == fit | stop
    assert not (fit | stop) & evaluated
    assert result.tags["signals_leakage"] == "false"
    assert (result.tags["signals_method"], result.tags["signals_labels"]) == ("optimized", "observed")
    if eval_split == "val":  # the same split fitted and evaluated is caught by the same indices
        leaky = evaluate(compose_run("signals.method=optimized", "signals.split=val", "data.eval_split=val", *fast))
        assert leaky.tags["signals_leakage"] == "true"


def test_plain_signals_keep_their_cache_key_and_recipes_get_their_own(binning):
    key = cache_key("m", "d", [3, 1, 2], binning)
    assert cache_key("m", "d", [3, 1, 2], binning, SignalRecipe()) == key
    assert cache_key("m", "d", [3, 1, 2], binning, SignalRecipe(method="knn")) == key
    keys = {
        cache_key("m", "d", [1, 2, 3], binning, recipe)
        for recipe in (
            SignalRecipe(labels="permuted"),
            SignalRecipe(labels="permuted", seed=1),
            SignalRecipe(labels="none"),
            SignalRecipe(method="optimized", steering={"strength": 1.0}),
            SignalRecipe(method="optimized", steering={"strength": 2.0}),
            SignalRecipe(method="optimized", optimize=FAST, steering={"strength": 1.0}),
        )
    }
    assert len(keys) == 6 and key not in keys


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        (["signals.path=/x.json", "signals.method=optimized"], "signals.method"),
        (["signals.path=/x.json", "signals.labels=none"], "signals.labels"),
        (["signals.method=knn", "signals.labels=permuted"], "signals.labels"),
        (["signals.method=knn", "category=random"], "signals.method"),
        (["signals.method=knn", "category=fixed", "category.target=neutral_moderate"], "signals.method"),
        (["signals.method=optimized", "signals.optimize.step_sizes=[]"], "signals.optimize.step_sizes"),
        (["signals.method=optimized", "signals.optimize.step_sizes=[0.1,-0.1]"], "signals.optimize.step_sizes"),
        (["signals.method=optimized", "priming=true"], "signals.method"),
    ],
)
def test_impossible_signal_options_are_refused_naming_the_option(compose_run, overrides, option):
    with pytest.raises(ConfigError) as err:
        check_run_options(compose_run(*overrides))
    assert err.value.option == option and "\n" not in str(err.value)


def test_the_cli_refuses_a_label_control_with_knn_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    overrides = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"demo.cache_dir={tmp_path}/demo"]
    proc = subprocess.run(
        [sys.executable, "-m", "steering.run", "signals.method=knn", "signals.labels=none", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "signals.labels" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "demo").exists()
