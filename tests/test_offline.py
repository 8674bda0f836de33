"""tracking=offline: every job logs to its own store, nothing shared; steering-merge joins them, idempotently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from steering.errors import TrackingError
from steering.merge import main as merge_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's runs share one set of tiny inputs."""
    return sweep_assets


@pytest.fixture(scope="module")
def offline_sweep(assets):
    """A 4-job offline sweep (two jobs fail: the model has no arousal -> conv4), started from its own
    directory, with the private server forced on (offline must not start it)."""
    tmp = assets["tmp"]
    cwd, sweep_dir = tmp / "cwd", tmp / "offline"
    cwd.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        "-m",
        "tracking=offline",
        "pathway=valence,arousal",
        "layer=conv4",
        "strength=0,1",
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        f"cache.dir={tmp}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        "hydra.callbacks.mlflow_sweep.server=always",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    return proc, sweep_dir, cwd


@pytest.fixture(scope="module")
def merged(offline_sweep, assets):
    """The sweep merged once into a main store that did not exist before; (main uri, sweep dir)."""
    _, sweep_dir, _ = offline_sweep
    uri = f"sqlite:///{assets['tmp']}/main.db"
    assert merge_main([str(sweep_dir), "--tracking-uri", uri]) == 0
    return uri, sweep_dir


def only_run(store: Path):
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "")
    assert len(runs) == 1, f"{store}: {len(runs)} runs"
    return client, runs[0]


def snapshot(uri: str) -> dict:
    """Everything a merge could change in a store: every run (deleted ones too), its data and artifacts."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    state = {}
    for run in client.search_runs(ids, "", run_view_type=ViewType.ALL):
        rid = run.info.run_id
        history = {k: len(client.get_metric_history(rid, k)) for k in run.data.metrics}
        artifacts = sorted(a.path for a in client.list_artifacts(rid))
        state[rid] = (run.info.status, run.info.lifecycle_stage, run.info.end_time, run.data.params, run.data.tags)
        state[rid] += (run.data.metrics, history, artifacts)
    return state


def test_offline_sweep_writes_one_store_per_job_and_nothing_shared(offline_sweep):
    proc, sweep_dir, cwd = offline_sweep
    assert proc.returncode != 0, proc.stderr[-3000:]  # Hydra reports the failed jobs
    sweep = json.loads((sweep_dir / "offline_sweep.json").read_text())
    assert sweep["planned_jobs"] == 4 and sweep["varied"] == ["pathway", "strength"]
    # no parent run, no server, no store where tracking=local would have put one
    assert not (sweep_dir / "mlflow_parent.json").exists() and not (sweep_dir / "mlflow_server.log").exists()
    assert not (cwd / "mlflow.db").exists() and not (cwd / "mlruns").exists()
    assert not (sweep_dir / "comparison.csv").exists()
    for job in range(4):
        client, run = only_run(sweep_dir / str(job) / "mlflow.db")
        tags = run.data.tags
        assert tags["sweep_id"] == sweep["sweep_id"] and tags["sweep_job_num"] == str(job)
        assert "mlflow.parentRunId" not in tags
        if job < 2:  # pathway=valence: finished, artifacts beside the job's store
            assert run.info.status == "FINISHED" and "dr_valence" in run.data.metrics
            artifacts = sweep_dir / str(job) / "mlartifacts" / run.info.run_id / "artifacts"
            assert (artifacts / "predictions.csv").is_file() and (artifacts / "config.yaml").is_file()
        else:  # failed before its run existed: recorded in its own store with the error
            assert run.info.status == "FAILED" and tags["sweep_error"].startswith("SteeringConfigError")


def test_merge_puts_parent_children_and_table_into_the_main_store(merged, offline_sweep):
    uri, sweep_dir = merged
    sweep = json.loads((sweep_dir / "offline_sweep.json").read_text())
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(ids, f"tags.sweep_id = '{sweep['sweep_id']}' and tags.sweep_role = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_jobs"] == 4 and parent.data.metrics["n_failed"] == 2
    children = client.search_runs(ids, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["sweep_job_num"] for c in children) == ["0", "1", "2", "3"]
    for child in children:
        job = child.data.tags["sweep_job_num"]
        source_client, source = only_run(sweep_dir / job / "mlflow.db")
        assert child.info.status == source.info.status and child.info.run_name == source.info.run_name
        assert child.data.params == source.data.params
        assert {k: v for k, v in child.data.metrics.items() if k in source.data.metrics} == source.data.metrics
        assert child.data.tags.get("sweep_error") == source.data.tags.get("sweep_error")
        copied = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert copied == {a.path for a in source_client.list_artifacts(source.info.run_id)}
        inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
        assert [d.dataset.digest for d in inputs] == [
            d.dataset.digest for d in source_client.get_run(source.info.run_id).inputs.dataset_inputs
        ]
    table = pd.read_csv(sweep_dir / "comparison.csv").sort_values("job")
    assert list(table["status"]) == ["FINISHED", "FINISHED", "FAILED", "FAILED"]
    assert set(table["run_id"]) == {c.info.run_id for c in children}
    by_id = {c.info.run_id: c for c in children}
    for row in table[table["status"] == "FINISHED"].itertuples():
        assert row.dr_valence == pytest.approx(by_id[row.run_id].data.metrics["dr_valence"])
    on_parent = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md", "strength_response.png"} <= on_parent


def test_merging_again_changes_nothing(merged):
    uri, sweep_dir = merged
    before, table_time = snapshot(uri), (sweep_dir / "comparison.csv").stat().st_mtime_ns
    assert merge_main([str(sweep_dir), "--tracking-uri", uri]) == 0
    assert snapshot(uri) == before
    assert (sweep_dir / "comparison.csv").stat().st_mtime_ns == table_time


def test_single_offline_run_merges_with_its_artifacts(assets, compose_run):
    from steering.tracking.job import evaluate

    run_dir = assets["tmp"] / "single"
    cfg = compose_run("tracking=offline", f"tracking.uri=sqlite:///{run_dir}/mlflow.db", "strength=2")
    result = evaluate(cfg, results_dir=run_dir)
    source_client, source = only_run(run_dir / "mlflow.db")
    assert (run_dir / "mlartifacts" / source.info.run_id / "artifacts" / "predictions.csv").is_file()
    run_dir = shutil.move(run_dir, assets["tmp"] / "copied_back")  # as if copied from the cluster
    uri = f"sqlite:///{assets['tmp']}/single_main.db"
    for _ in range(2):  # the second merge finds the run already there
        assert merge_main([str(run_dir), "--tracking-uri", uri]) == 0
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("steering").experiment_id], "")
        assert len(runs) == 1
    copy = runs[0]
    assert copy.info.run_id != result.run_id and copy.data.tags["merged_from_run_id"] == result.run_id
    assert copy.data.metrics == source.data.metrics and copy.data.params == source.data.params
    assert copy.info.status == "FINISHED" and "mlflow.parentRunId" not in copy.data.tags
    assert "predictions.csv" in {a.path for a in client.list_artifacts(copy.info.run_id)}


def test_a_run_merged_while_running_is_copied_again_once_it_ended(tmp_path):
    store = tmp_path / "job" / "mlflow.db"
    store.parent.mkdir()
    source = MlflowClient(f"sqlite:///{store}")
    experiment_id = source.create_experiment("steering", artifact_location=str(tmp_path / "job" / "mlartifacts"))
    run = source.create_run(experiment_id, run_name="long")
    source.log_metric(run.info.run_id, "epoch_loss", 1.0, step=0)
    uri = f"sqlite:///{tmp_path}/main.db"
    assert merge_main([str(tmp_path / "job"), "--tracking-uri", uri]) == 0
    source.log_metric(run.info.run_id, "epoch_loss", 0.5, step=1)
    source.set_terminated(run.info.run_id, "FINISHED")
    assert merge_main([str(tmp_path / "job"), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("steering").experiment_id], "")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "epoch_loss")] == [1.0, 0.5]


def test_a_directory_without_offline_stores_is_refused_naming_it(tmp_path):
    with pytest.raises(TrackingError, match=str(tmp_path)):
        merge_main([str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/main.db"])


def test_a_job_resumed_in_its_directory_is_one_row_and_its_earlier_attempt_stays_outside(tmp_path):
    sweep_dir = tmp_path / "sweep"
    store = sweep_dir / "0" / "mlflow.db"
    store.parent.mkdir(parents=True)
    sweep = {"sweep_id": "s1", "experiment": "steering", "varied": ["strength"], "planned_jobs": 1}
    sweep |= {"run_name": "sweep-multirun-s1", "tags": {"sweep_id": "s1", "sweep_role": "parent"}}
    (sweep_dir / "offline_sweep.json").write_text(json.dumps(sweep))
    source = MlflowClient(f"sqlite:///{store}")
    experiment_id = source.create_experiment("steering", artifact_location=str(store.parent / "mlartifacts"))
    tags = {"sweep_id": "s1", "sweep_job_num": "0", "sweep_overrides": json.dumps(["strength=1"])}
    killed = source.create_run(experiment_id, run_name="first", tags=tags)  # left RUNNING by a killed job
    again = source.create_run(experiment_id, run_name="again", tags=tags)
    source.log_metric(again.info.run_id, "dr_valence", 0.25)
    source.set_terminated(again.info.run_id, "FINISHED")
    uri = f"sqlite:///{tmp_path}/main.db"
    assert merge_main([str(sweep_dir), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    ids = [client.get_experiment_by_name("steering").experiment_id]
    runs = {r.data.tags["merged_from_run_id"]: r for r in client.search_runs(ids, "tags.merged_from_run_id != ''")}
    parent = client.search_runs(ids, "tags.sweep_role = 'parent'")[0]
    assert runs[again.info.run_id].data.tags["mlflow.parentRunId"] == parent.info.run_id
    earlier = runs[killed.info.run_id]
    assert "mlflow.parentRunId" not in earlier.data.tags and "sweep_id" not in earlier.data.tags
    assert earlier.info.status == "KILLED"
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert list(table["run_id"]) == [runs[again.info.run_id].info.run_id]
