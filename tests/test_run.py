"""The runner end to end on a tiny reference-layout checkpoint and feature file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from steering.data import FeatureFile, split_indices
from steering.engine import SteeringConfigError
from steering.stats.metrics import williams_t
from steering.tracking.job import evaluate


def _params_hash(model_path):
    from steering import load_model

    model = load_model(model_path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_run_logs_params_metrics_artifacts_and_tags(assets, compose_run):
    cfg = compose_run("method=bypass", "strength=2.0")
    result = evaluate(cfg)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    run = client.get_run(result.run_id)
    for t in ("valence", "arousal"):
        for name in ("r_base", "r_steered", "ccc_base", "ccc_steered", "mae_base", "mae_steered", "shift"):
            assert f"{name}_{t}" in run.data.metrics
        for suffix in ("", "_ci_low", "_ci_high", "_p", "_zou_low", "_zou_high"):
            assert f"dr_{t}{suffix}" in run.data.metrics
    for name in ("coverage", "n_eval", "feedback_effect"):
        assert name in run.data.metrics
    assert run.data.params["method.name"] == "bypass" and run.data.params["strength"] == "2.0"
    assert json.loads(run.data.params["binning.valence.thresholds"]) == list(cfg.binning.valence.thresholds)
    assert run.data.tags["oracle"] == "true"
    assert run.data.tags["git_commit"]
    assert run.info.run_name == "9bin-valence-conv4-bypass-s2-oracle"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "predictions.csv", "per_category.csv", "signals_9bin.json"} <= artifacts
    local = client.download_artifacts(result.run_id, "predictions.csv", str(assets["tmp"]))
    pred = pd.read_csv(local)
    assert list(pred.columns) == [
        "audio_name",
        "valence",
        "arousal",
        "category",
        "steered",
        "base_valence",
        "base_arousal",
        "steered_valence",
        "steered_arousal",
        "signal",
    ]
    # The logged dr and p can be recomputed from the CSV.
    r_b = np.corrcoef(pred.base_valence, pred.valence)[0, 1]
    r_s = np.corrcoef(pred.steered_valence, pred.valence)[0, 1]
    r_bs = np.corrcoef(pred.base_valence, pred.steered_valence)[0, 1]
    assert run.data.metrics["dr_valence"] == pytest.approx(r_s - r_b, abs=1e-5)
    assert run.data.metrics["dr_valence_williams_p"] == pytest.approx(
        williams_t(r_s, r_b, r_bs, len(pred))[1], abs=1e-4
    )


def test_predictions_match_the_model_and_evaluated_split(assets, compose_run):
    result = evaluate(compose_run("method=modulation", "strength=0.0"))
    pred = result.predictions
    with FeatureFile(assets["features"]) as ff:
        idx = split_indices(len(ff), "test")
        assert list(pred.audio_name) == [ff.audio_names[i] for i in idx]
        from steering import load_model

        model = load_model(assets["checkpoint"])
        with torch.no_grad():
            base = model(ff.read(idx).features)["valence"].view(-1).numpy()
    np.testing.assert_allclose(pred.base_valence, base, rtol=1e-5, atol=1e-5)


def test_signals_from_training_split_contain_no_evaluated_sample(assets, compose_run):
    result = evaluate(compose_run())
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    path = client.download_artifacts(result.run_id, "signals_9bin.json", str(assets["tmp"]))
    meta = json.loads(Path(path).read_text())["metadata"]
    with FeatureFile(assets["features"]) as ff:
        evaluated = set(split_indices(len(ff), "test").tolist())
        train = set(split_indices(len(ff), "train").tolist())
    assert set(meta["indices"]) == train
    assert not set(meta["indices"]) & evaluated
    assert result.tags["signals_leakage"] == "false"
    leaky = evaluate(compose_run("signals.split=all"))
    assert leaky.tags["signals_leakage"] == "true"


def test_oracle_tag_follows_the_category_choice(assets, compose_run):
    assert evaluate(compose_run("category=predicted")).tags["oracle"] == "false"
    assert evaluate(compose_run("category=shuffled")).tags["oracle"] == "true"
    mean = evaluate(compose_run("category=mean"))
    assert mean.tags["oracle"] == "false" and mean.metrics["coverage"] == 1.0


def test_impossible_pair_fails_before_any_work(assets, compose_run):
    with pytest.raises(SteeringConfigError, match="arousal->conv4"):
        evaluate(compose_run("pathway=arousal", "layer=conv4"))
    assert not (assets["tmp"] / "cache").exists()


def test_model_unchanged_and_no_hooks_after_a_failing_run(assets, monkeypatch, compose_run):
    from steering import evaluation
    from steering.tracking import job as runner

    before = _params_hash(assets["checkpoint"])
    seen = {}
    real_load = runner.load_model

    def spy_load(*args, **kwargs):
        seen["model"] = real_load(*args, **kwargs)
        seen["state"] = {k: v.clone() for k, v in seen["model"].state_dict().items()}
        return seen["model"]

    def boom(*_args, **_kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(runner, "load_model", spy_load)
    monkeypatch.setattr(evaluation, "steer_chunk", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        evaluate(compose_run("method=bypass", "strength=3"))
    model = seen["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen["state"][k]) and torch.equal(v, before[k])
    # no steering left behind (hooks, gains): the model computes what a freshly loaded one does
    from steering import load_model

    x = torch.randn(3, 32, 64, generator=torch.Generator().manual_seed(0)) * 5 - 30
    with torch.no_grad():
        got, fresh = model(x), load_model(assets["checkpoint"])(x)
    for key in ("valence", "arousal", "embedding"):
        assert torch.equal(got[key], fresh[key]), key
    # The job's run opens only to record finished results: a failure leaves no FAILED run, not even a store.
    assert not (assets["tmp"] / "mlflow.db").exists()


def test_cli_runs_one_configuration(assets):
    tmp = assets["tmp"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        "binning=9bin",
        "pathway=valence",
        "layer=conv3",
        "strength=1.5",
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        f"tracking.uri=sqlite:///{tmp}/cli.db",
        f"cache.dir={tmp}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        f"hydra.run.dir={tmp}/out",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dr " in proc.stdout and "MLflow run" in proc.stdout


def test_resume_skips_a_configuration_that_already_finished(assets, monkeypatch, compose_run):
    from steering.tracking import job as runner
    from steering.tracking.runs import PARENT_FILE

    first = evaluate(compose_run("resume=true", "method=direct", "strength=0.5"))

    def fail(*_a, **_k):
        raise AssertionError("finished configuration evaluated again")

    monkeypatch.setattr(runner, "evaluate_configuration", fail)
    again = evaluate(compose_run("resume=true", "method=direct", "strength=0.5"))
    assert again.run_id == first.run_id
    assert again.metrics["dr_valence"] == pytest.approx(first.metrics["dr_valence"])
    pd.testing.assert_frame_equal(again.predictions, first.predictions, check_dtype=False)
    # In a new sweep the finished configuration still gets a child row, pointing to the original.
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    parent = client.create_run(first.experiment_id, tags={"sweep_id": "s2"})
    sweep_dir = assets["tmp"] / "sweep2"
    sweep_dir.mkdir()
    uri = f"sqlite:///{assets['tmp']}/mlflow.db"
    (sweep_dir / PARENT_FILE).write_text(
        json.dumps({"run_id": parent.info.run_id, "sweep_id": "s2", "tracking_uri": uri})
    )
    child = evaluate(compose_run("resume=true", "method=direct", "strength=0.5"), sweep_dir=sweep_dir)
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["resumed_from"] == first.run_id
    assert run.data.metrics["dr_valence"] == pytest.approx(first.metrics["dr_valence"])
    # A different configuration is not skipped.
    monkeypatch.undo()
    other = evaluate(compose_run("resume=true", "method=direct", "strength=2"))
    assert other.run_id != first.run_id


def test_resume_does_not_reuse_a_run_whose_metrics_meant_something_else(assets, compose_run):
    """A run logged before a metric changed meaning (e.g. dr_<t>_p was Williams' p) is computed again."""
    first = evaluate(compose_run("resume=true", "method=direct", "strength=0.5"))
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    client.delete_tag(first.run_id, "results_version")  # as logged by an earlier version
    again = evaluate(compose_run("resume=true", "method=direct", "strength=0.5"))
    assert again.run_id != first.run_id
    assert client.get_run(again.run_id).data.tags["results_version"]
    assert again.metrics["dr_valence"] == pytest.approx(first.metrics["dr_valence"])


def test_the_evaluation_runs_from_a_plan_without_any_config(assets, compose_run):
    """The computation is driven by a typed plan alone and gives what the runner logged."""
    import dataclasses

    from steering import load_model
    from steering.data.binning import Binning
    from steering.engine import SteeringSpec, select_connections
    from steering.evaluation import EvaluationInputs, EvaluationPlan, evaluate_configuration
    from steering.signals import extract_signals

    logged = evaluate(compose_run("method=bypass", "strength=2", "category=shuffled", "category.draws=2"))
    model = load_model(assets["checkpoint"])
    binning = dataclasses.replace(
        Binning.load(Path(__file__).resolve().parents[1] / "conf" / "binning" / "9bin.yaml"), min_samples=3
    )
    spec = SteeringSpec(select_connections(model.connections, "valence", "conv4"), method="bypass", strength=2.0)
    plan = EvaluationPlan(spec=spec, category="shuffled", draws=2, bootstrap_resamples=200)
    with FeatureFile(assets["features"]) as ff:
        signals = extract_signals(model, ff, split_indices(len(ff), "train"), binning, batch_size=16)
        inputs = EvaluationInputs(
            model, ff, split_indices(len(ff), "test"), signals, binning, torch.device("cpu"), "m", "d"
        )
        result = evaluate_configuration(plan, inputs)
    pd.testing.assert_frame_equal(result.predictions, logged.predictions)
    assert result.metrics == logged.metrics
