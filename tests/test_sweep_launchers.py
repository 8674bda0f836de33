"""Beyond one machine: parallel joblib sweeps through a local tracking server, Submitit, presets."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def _port_open(uri: str) -> bool:
    host, port = uri.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_joblib_parallel_sweep_logs_every_run_through_a_local_server(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(
        assets, "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "strength=0,0.5,1,2", "method=bypass"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    assert info["tracking_uri"].startswith("http://127.0.0.1:")  # jobs logged over HTTP, not to SQLite
    assert not _port_open(info["tracking_uri"])  # and the server is gone
    assert parent.info.status == "FINISHED"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert sorted(float(c.data.params["strength"]) for c in children) == [0, 0.5, 1, 2]
    assert all(
        "dr_valence" in c.data.metrics and "config.yaml" in {a.path for a in client.list_artifacts(c.info.run_id)}
        for c in children
    )
    assert (sweep_dir / "strength_response.png").exists()
    # what a person is told to open is the store that stays (SQLite), not the server that is gone
    job_log = (sweep_dir / "0" / "run.log").read_text()
    assert f"mlflow ui --backend-store-uri {uri}" in job_log and info["tracking_uri"] not in job_log
    assert f"mlflow ui --backend-store-uri {uri}" in proc.stdout
    assert "View run" not in proc.stdout  # MLflow's own links would name the temporary server


def test_submitit_local_sweep_nests_runs(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(assets, "submitit", "hydra/launcher=submitit_local", "strength=0,1", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, info, parent, children = parent_and_children(uri, sweep_dir)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    assert (sweep_dir / "comparison.csv").read_text().count("\n") == 3


def test_slurm_preset_extends_submitit_slurm():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    module, name = launcher._target_.rsplit(".", 1)
    target = getattr(importlib.import_module(module), name)
    # Submitit's SLURM launcher, extended to collect every job (Hydra's plugin scan may import its module twice)
    submitit_slurm = f"{submitit_launcher.__name__}.SlurmLauncher"
    assert submitit_slurm in {f"{c.__module__}.{c.__qualname__}" for c in target.__mro__[1:]}
    assert launcher.timeout_min == 60 and launcher.gpus_per_node == 0
    # one job evaluates one configuration: the defaults fit a small node
    assert launcher.cpus_per_task <= 2 and launcher.mem_gb <= 8
    assert "partition" in launcher and launcher.array_parallelism == 32


def test_server_tracking_preset_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["tracking=server"])
    assert cfg.tracking.uri == "http://mlflow.team:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["tracking=server"])
    assert cfg.tracking.uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize("mode", ["bogus"])
def test_callback_rejects_unknown_server_mode(mode):
    from steering.sweep.callback import MlflowSweepCallback

    with pytest.raises(ValueError, match="auto, always or never"):
        MlflowSweepCallback(server=mode)
