"""What a person sees of a sweep: the parent run in MLflow, child run names, dataset inputs, logs, links,
an already running server, and a SLURM launcher without SLURM."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from steering.data import file_hash
from steering.sweep.server import start_server

MLFLOW_OWN_FORMAT = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARNING) mlflow", re.MULTILINE)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def test_parent_run_carries_fixed_config_varied_choices_summary_and_table(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(assets, "surface", "method=lrm,bypass", "strength=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    params, tags, metrics = parent.data.params, parent.data.tags, parent.data.metrics
    # the fixed part of the configuration as params; what varied as tags
    assert params["binning.name"] == "9bin" and float(params["strength"]) == 2 and params["layer.name"] == "conv4"
    assert "method.name" not in params
    assert tags["sweep_varied_values"] == "method: lrm, bypass"
    assert "method.name" in json.loads(tags["sweep_varied_params"])
    # summary metrics: jobs, failed, best Δr per target and its row
    assert metrics["n_jobs"] == 2 and metrics["n_failed"] == 0
    by_name = {c.data.params["method.name"]: c for c in children}
    for t in ("valence", "arousal"):
        best = max(children, key=lambda c: c.data.metrics[f"dr_{t}"])
        assert metrics[f"best_dr_{t}"] == pytest.approx(best.data.metrics[f"dr_{t}"])
        assert best.info.run_id in tags[f"best_dr_{t}_row"]
        assert f"method={best.data.params['method.name']}" in tags[f"best_dr_{t}_row"]
    # the comparison table as the run's description
    note = tags["mlflow.note.content"]
    assert note.startswith(f"### Sweep {info['sweep_id']}") and "| lrm |" in note and "| bypass |" in note
    # child names lead with what varies
    assert by_name["lrm"].info.run_name.startswith("lrm · 9bin-valence-conv4-s2")
    assert by_name["bypass"].info.run_name.startswith("bypass · ")
    # the feature file as a dataset input (context eval, digest = content hash)
    digest = file_hash(assets["features"])
    for child in children:
        (dataset_input,) = child.inputs.dataset_inputs
        assert dataset_input.dataset.name == "feats.h5"
        assert dataset_input.dataset.digest == digest[:36]
        assert str(assets["features"].resolve()) in dataset_input.dataset.source
        assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "eval"
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["feats.h5"]  # the parent row names it too
    # strength is fixed: a forest plot instead of a strength figure
    assert (sweep_dir / "forest.png").stat().st_size > 10_000
    assert "forest.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # logs: MLflow's lines in Hydra's format; the job's summary in its log file with how to open the run
    assert not MLFLOW_OWN_FORMAT.search(proc.stdout + proc.stderr)
    job_log = (sweep_dir / "0" / "run.log").read_text()
    child0 = next(c for c in children if c.data.tags["sweep_job_num"] == "0")
    assert f"MLflow run {child0.info.run_id}" in job_log
    assert f"mlflow ui --backend-store-uri {uri}" in job_log
    assert f"#/experiments/{info['experiment_id']}/runs/{child0.info.run_id}" in job_log
    # the end of the sweep: a table that fits 100 columns and the parent's link
    assert f"#/experiments/{info['experiment_id']}/runs/{parent.info.run_id}" in proc.stdout


def test_joblib_sweep_logs_to_an_already_running_server(assets, run_sweep):
    tmp = assets["tmp"]
    backend = f"sqlite:///{tmp}/team.db"
    from steering.tracking.runs import configure

    configure(backend, "steering")  # the team's store exists before its server starts
    server = start_server(backend, tmp / "team-server", workers=1)
    try:
        proc, sweep_dir, _ = run_sweep(
            assets,
            "joblib-team",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "strength=0,1",
            "method=bypass",
            uri=server.uri,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
        assert info["tracking_uri"] == server.uri == info["backend_uri"]  # no private server of its own
        assert not (sweep_dir / "mlflow_server.log").exists()
        client = MlflowClient(server.uri)
        children = client.search_runs([info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}'")
        assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
        assert client.get_run(info["run_id"]).info.status == "FINISHED"
        assert f"open {server.uri}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}" in proc.stdout
    finally:
        server.stop()


def test_slurm_launcher_without_slurm_stops_before_anything(assets, tmp_path):
    # An empty PATH (python is called by its full path): no sbatch, also where SLURM is installed.
    (tmp_path / "bin").mkdir()
    env = {
        **os.environ,
        "PATH": str(tmp_path / "bin"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        "-m",
        "hydra/launcher=slurm",
        "strength=0,1",
        f"tracking.uri=sqlite:///{tmp_path}/slurm.db",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sbatch" in lines[0] and "submitit_local" in lines[0], proc.stderr
    assert not (tmp_path / "slurm.db").exists()  # no store, hence no parent run
    assert not (tmp_path / "sweep" / "mlflow_parent.json").exists()
