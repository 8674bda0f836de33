"""Sweeps on a real single-node SLURM cluster (scripts/slurm/start.sh through the ``slurm_cluster`` fixture):
every job is accounted for in MLflow whether it finishes, is cancelled, runs over its time limit or the
sweep is interrupted, and nothing is left in the queue."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from steering.sweep.slurm_queue import QueueWatch

# A Hydra callback the jobs load (from the test's tmp dir): job ``job`` sleeps at its start or end on its
# first attempt only, leaving a marker file first, so a test can act on a job known to be running.
SLOW_JOB = """
import os, time
from pathlib import Path
from hydra.experimental.callback import Callback


class SlowJob(Callback):
    def __init__(self, job, where, seconds, marker):
        self.job, self.where, self.seconds, self.marker = int(job), where, float(seconds), Path(marker)

    def _maybe_sleep(self, config, where):
        first_attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0) == 0
        if where == self.where and int(config.hydra.job.num) == self.job and first_attempt:
            (self.marker / f"job{self.job}-{where}").touch()
            time.sleep(self.seconds)

    def on_job_start(self, config, **kwargs):
        self._maybe_sleep(config, "start")

    def on_job_end(self, config, job_return, **kwargs):
        self._maybe_sleep(config, "end")
"""


@pytest.fixture(scope="module")
def assets(sweep_assets):
    (sweep_assets["tmp"] / "slow_job.py").write_text(SLOW_JOB)
    return sweep_assets


def _queue(name: str) -> list[str]:
    """``id|state`` of this sweep's jobs still in the queue."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T"], capture_output=True, text=True)
    return out.stdout.split()


def _start_sweep(cluster, assets, name: str, *overrides: str, slow: str | None = None, offline: bool = False):
    """``steering.run -m hydra/launcher=slurm`` in the background; returns (process, sweep dir, uri, job name).

    ``slow``: ``"<job>:<start|end>:<seconds>"`` makes that job sleep on its first attempt (SlowJob above);
    ``offline``: ``tracking=offline`` (each job its own store) instead of the store at ``uri``."""
    tmp = assets["tmp"]
    sweep_dir, uri, job_name = tmp / name, f"sqlite:///{tmp}/{name}.db", f"steering-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.name={job_name}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "method=bypass",
        *overrides,
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        "tracking=offline" if offline else f"tracking.uri={uri}",
        f"cache.dir={tmp}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    if slow:
        job, where, seconds = slow.split(":")
        cmd += [
            "+hydra.callbacks.slow._target_=slow_job.SlowJob",
            f"+hydra.callbacks.slow.job={job}",
            f"+hydra.callbacks.slow.where={where}",
            f"+hydra.callbacks.slow.seconds={seconds}",
            f"+hydra.callbacks.slow.marker={tmp}",
        ]
    env = {**cluster.env, "PYTHONPATH": f"{cluster.env['PYTHONPATH']}:{tmp}"}
    log = (tmp / f"{name}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp)
    return proc, sweep_dir, uri, job_name


def _array(sweep_dir: Path) -> str:
    """The SLURM job array of the sweep (Submitit's job folders are named ``<array>_<task>``)."""
    return next(p.name for p in (sweep_dir / ".submitit").iterdir() if p.name[0] != ".").split("_")[0]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _finish(proc: subprocess.Popen, assets, name: str, timeout: float = 300) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return (assets["tmp"] / f"{name}.log").read_text()


def _sweep_runs(uri: str, sweep_dir: Path):
    info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    client = MlflowClient(uri)
    children = client.search_runs([info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}'")
    by_job = {int(c.data.tags["sweep_job_num"]): c for c in children}
    assert len(by_job) == len(children), "a job logged more than one run"
    return client, info, client.get_run(info["run_id"]), by_job


def test_slurm_sweep_logs_every_job_under_its_parent(slurm_cluster, assets):
    proc, sweep_dir, uri, job_name = _start_sweep(slurm_cluster, assets, "three", "strength=0,1,2")
    out = _finish(proc, assets, "three")
    assert proc.returncode == 0, out[-3000:]
    assert "cannot reach a server" not in out  # the private server on this host is the node's own
    client, info, parent, by_job = _sweep_runs(uri, sweep_dir)
    assert sorted(by_job) == [0, 1, 2]
    assert {c.info.status for c in by_job.values()} == {"FINISHED"}
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_failed"] == 0
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert sorted(table["strength"]) == [0, 1, 2] and set(table["status"]) == {"FINISHED"}
    # each job ran as a task of one SLURM array on this cluster, and nothing is left in the queue
    tasks = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if "_" in p.name and p.name[0] != ".")
    array = tasks[0].split("_")[0]
    assert tasks == [f"{array}_{i}" for i in range(3)]
    assert _queue(job_name) == []


def test_cancelled_job_is_recorded_and_the_others_finish_without_accounting(slurm_cluster, assets):
    # without accounting sacct fails (Submitit alone would wait for the cancelled job forever)
    slurm_cluster.start(accounting=False)
    name = "cancel"
    # job 0 sleeps (running) while jobs 1 and 2 run after it: cancelling it must not end the sweep
    proc, sweep_dir, uri, job_name = _start_sweep(
        slurm_cluster, assets, name, "strength=0,1,2", "hydra.launcher.array_parallelism=2", slow="0:start:600"
    )
    try:
        _wait_for(lambda: (assets["tmp"] / "job0-start").exists(), 240, "job 0 to run")
        (assets["tmp"] / "job0-start").unlink()
        array = _array(sweep_dir)
        subprocess.run(["scancel", f"{array}_0"], check=True)
        out = _finish(proc, assets, name)
    finally:
        slurm_cluster.start(accounting=True)
    assert proc.returncode == 1, out[-3000:]  # Hydra: a job failed
    client, info, parent, by_job = _sweep_runs(uri, sweep_dir)
    assert sorted(by_job) == [0, 1, 2]
    assert by_job[1].info.status == by_job[2].info.status == "FINISHED"
    dead = by_job[0]
    assert dead.info.status in ("FAILED", "KILLED")
    assert f"SLURM job {array}_0 CANCELLED" in dead.data.tags["sweep_error"]
    # the parent says how many failed and why; the table has every job
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_failed"] == 1
    assert parent.data.tags["sweep_failed_jobs"].startswith("1 of 3 jobs failed: job 0: SLURM job")
    table = pd.read_csv(sweep_dir / "comparison.csv").set_index("job")
    assert table.loc[0, "status"] == "FAILED" and "CANCELLED" in table.loc[0, "error"]
    assert list(table.loc[[1, 2], "status"]) == ["FINISHED", "FINISHED"]
    assert _queue(job_name) == []
    assert "Bypassing sacct error" not in out  # states come from squeue, not from Submitit's sacct polls


def test_queue_watch_without_accounting_reports_the_failing_sacct_once(slurm_cluster, caplog):
    slurm_cluster.start(accounting=False)
    try:
        job = subprocess.run(
            ["sbatch", "--parsable", "--array=0", "--wrap", "true", "-o", "/dev/null"], capture_output=True, text=True
        )
        watch = QueueWatch()
        # a job the controller knows comes from squeue; one it has forgotten would need sacct, which fails
        for _ in range(3):
            states = watch.states([f"{job.stdout.strip()}_0", "999999_0"])
    finally:
        slurm_cluster.start(accounting=True)
    assert f"{job.stdout.strip()}_0" in states and "999999_0" not in states
    assert sum("sacct does not answer" in r.getMessage() for r in caplog.records) == 1


def test_job_over_its_time_limit_is_requeued_once_and_logged_once(slurm_cluster, assets):
    # job 1 logs its run, then sleeps past the time limit: SLURM signals it 50 s before the limit (checked
    # every 30 s, so 70-100 s into the job), Submitit requeues it once, and the second attempt (no sleep,
    # done well within 70 s) replaces the first attempt's run
    proc, sweep_dir, uri, job_name = _start_sweep(
        slurm_cluster,
        assets,
        "timeout",
        "strength=0,1",
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=50",
        "hydra.launcher.max_num_timeout=1",
        slow="1:end:600",
    )
    out = _finish(proc, assets, "timeout", timeout=400)
    assert proc.returncode == 0, out[-3000:]
    client, info, parent, by_job = _sweep_runs(uri, sweep_dir)
    assert sorted(by_job) == [0, 1] and {c.info.status for c in by_job.values()} == {"FINISHED"}
    # the first attempt's run is in MLflow's trash, marked as superseded
    deleted = client.search_runs(
        [info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}'", run_view_type=ViewType.DELETED_ONLY
    )
    assert [r.data.tags["sweep_job_num"] for r in deleted] == ["1"]
    assert "requeued" in deleted[0].data.tags["superseded_by"]
    array = _array(sweep_dir)
    shown = subprocess.run(["scontrol", "show", "job", f"{array}_1"], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown and "JobState=COMPLETED" in shown, shown
    assert len(pd.read_csv(sweep_dir / "comparison.csv")) == 2


def test_sigterm_cancels_the_sweeps_jobs_and_ends_the_parent_killed(slurm_cluster, assets):
    # job 0 runs (asleep) and job 2 waits in the queue (one job at a time) when the sweep gets SIGTERM
    proc, sweep_dir, uri, job_name = _start_sweep(
        slurm_cluster, assets, "sigterm", "strength=0,1,2", "hydra.launcher.array_parallelism=1", slow="0:start:600"
    )
    _wait_for(lambda: (assets["tmp"] / "job0-start").exists(), 240, "job 0 to run")
    (assets["tmp"] / "job0-start").unlink()
    states = dict(line.split("|") for line in _queue(job_name))
    assert "RUNNING" in states.values() and "PENDING" in states.values(), states
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, assets, "sigterm", timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert _queue(job_name) == []
    client, info, parent, by_job = _sweep_runs(uri, sweep_dir)
    assert parent.info.status == "KILLED"
    assert all(c.info.status != "RUNNING" for c in by_job.values())


def test_a_request_no_node_fits_stops_before_anything(slurm_cluster, assets, tmp_path):
    cpus = int(
        subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0].rstrip("+")
    )
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.cpus_per_task={cpus + 2}",
        "strength=0,1",
        f"tracking.uri=sqlite:///{tmp_path}/request.db",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=slurm_cluster.env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"needs {cpus + 2} CPUs" in lines[0] and f"has {cpus}" in lines[0], proc.stderr
    assert not (tmp_path / "request.db").exists() and not (tmp_path / "sweep").exists()  # nothing started


def test_offline_sweep_on_the_cluster_merges_into_the_main_store(slurm_cluster, assets):
    """Compute nodes without a route to any server: each SLURM job logs to its own store, one command
    merges them into the main store with the parent and the table (docs/hpc.md)."""
    from steering.merge import main as merge_main

    proc, sweep_dir, uri, job_name = _start_sweep(slurm_cluster, assets, "offline", "strength=0,1", offline=True)
    out = _finish(proc, assets, "offline")
    assert proc.returncode == 0, out[-3000:]
    _wait_for(lambda: _queue(job_name) == [], 60, "the finished jobs to leave the queue")
    assert not (sweep_dir / "mlflow_parent.json").exists() and not (sweep_dir / "mlflow_server.log").exists()
    stores = sorted(p.parent.name for p in sweep_dir.glob("*/mlflow.db"))
    assert stores == ["0", "1"]  # one store per job, in the job's directory
    main = f"sqlite:///{assets['tmp']}/offline-main.db"
    assert merge_main([str(sweep_dir), "--tracking-uri", main]) == 0
    client = MlflowClient(main)
    ids = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(ids, "tags.sweep_role = 'parent'")
    children = client.search_runs(ids, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["sweep_job_num"] for c in children) == ["0", "1"]
    assert {c.info.status for c in children} == {"FINISHED"}
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert sorted(table["strength"]) == [0, 1] and set(table["run_id"]) == {c.info.run_id for c in children}
