"""The sweep's private tracking server: a sweep never runs untracked, the server is the sweep's own, on a port
it binds itself, with one worker; SLURM's reachability warning only where jobs may run elsewhere."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from steering.sweep.server import StoreToken, nodes_elsewhere, start_server


@pytest.fixture(scope="module")
def assets(sweep_assets):
    return sweep_assets


class _Impostor(BaseHTTPRequestHandler):
    """Answers every GET with 200 and a JSON body, as a careless health check would like."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"status": "OK", "experiment": {"experiment_id": "0", "tags": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor():
    """Another program on a loopback port, answering 200 on /health and on MLflow's REST paths."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _store(tmp: Path, name: str) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp}/{name}.db"
    MlflowClient(uri).search_experiments()  # creates the store and its Default experiment
    return uri


def _session_processes(pid: int) -> list[str]:
    """Commands of the live processes in the session led by ``pid`` (the server and its children)."""
    out = subprocess.run(["ps", "-ww", "-eo", "sid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        sid, state, args = line.strip().split(None, 2)
        if int(sid) == pid and not state.startswith("Z"):
            found.append(args)
    return found


def test_an_impostor_is_not_taken_for_the_store_s_server(tmp_path, impostor):
    uri = _store(tmp_path, "impostor")
    token = StoreToken.write(uri, "0")
    assert token.served_by(f"http://127.0.0.1:{impostor}") is False
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        assert token.served_by(f"http://127.0.0.1:{sock.getsockname()[1]}") is None


def test_server_on_a_taken_port_starts_on_another_one_with_one_worker(tmp_path, impostor):
    from mlflow.tracking import MlflowClient

    uri = _store(tmp_path, "taken")
    server = start_server(uri, tmp_path / "logs", port=impostor, timeout=240)
    try:
        port = int(server.uri.rsplit(":", 1)[1])
        assert port != impostor
        assert MlflowClient(server.uri).get_experiment("0").name == "Default"  # it serves this store
        processes = _session_processes(server.process.pid)
        served = [p for p in processes if "steering.sweep.guard" not in p]
        assert len(served) == 2, processes  # `mlflow server` and one uvicorn process, no worker pool
        assert any("uvicorn" in p and "--workers 1" in p for p in processes), processes
        text = server.log_path.read_text()
        assert server.log_path.parent == tmp_path / "logs" and "address already in use" in text.lower()
    finally:
        server.stop()
    # the check's token is gone from the store again
    assert not [k for k in MlflowClient(uri).get_experiment("0").tags if k.startswith("steering.")]


_STARTER = """
import sys, time
from steering.sweep.server import start_server
server = start_server(sys.argv[1], sys.argv[2], timeout=240)
print(server.process.pid, flush=True)
time.sleep(600)
"""


def test_the_server_ends_when_the_process_that_started_it_is_killed(tmp_path):
    uri = _store(tmp_path, "orphan")
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER, uri, str(tmp_path / "logs")], stdout=subprocess.PIPE, text=True
    )
    server_pid = None
    try:
        server_pid = int(starter.stdout.readline())
        assert len(_session_processes(server_pid)) >= 2  # the guard and the server it runs
        starter.kill()  # SIGKILL: the sweep gets no chance to stop its server
        starter.wait(10)
        deadline = time.monotonic() + 30
        while _session_processes(server_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _session_processes(server_pid) == []
    finally:
        starter.kill()
        if server_pid is not None:
            subprocess.run(["pkill", "-9", "-s", str(server_pid)], check=False)


def _runs_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from runs").fetchone()[0])


@pytest.mark.parametrize(
    ("launcher", "extra", "runs"),
    [
        ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", ["resume=false"]),
        # and a rerun with resume=true must not go on either
        ("hydra/launcher=basic", "hydra.callbacks.mlflow_sweep.server=always", ["resume=false", "resume=true"]),
    ],
    ids=["joblib", "basic"],
)
def test_a_server_that_does_not_start_stops_the_sweep_before_any_job(assets, run_sweep, launcher, extra, runs):
    name = f"nostart-{launcher.rsplit('=', 1)[1]}"
    for resume in runs:
        proc, sweep_dir, _ = run_sweep(
            assets, name, launcher, extra, resume, "+hydra.callbacks.mlflow_sweep.server_timeout=1",
            "strength=0,1", "method=bypass", timeout=300,
        )  # fmt: skip
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert len(errors) == 1 and errors[0].startswith("error:"), proc.stderr[-3000:]
        assert str(sweep_dir / "mlflow_server.log") in errors[0]
        assert (sweep_dir / "mlflow_server.log").is_file()
        assert not (sweep_dir / "mlflow_parent.json").exists()
        assert not [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]  # no job directory
        assert _runs_in(assets["tmp"] / f"{name}.db") == 0  # no parent, no child runs
        assert "launching" not in proc.stdout.lower()  # Hydra's launcher line never came


def test_a_sweep_whose_server_port_is_taken_runs_on_another_port(assets, run_sweep, parent_and_children, impostor):
    proc, sweep_dir, uri = run_sweep(
        assets, "taken-port", "hydra/launcher=basic", "hydra.callbacks.mlflow_sweep.server=always",
        f"+hydra.callbacks.mlflow_sweep.port={impostor}", "strength=0,1", "method=bypass",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 jobs" in proc.stdout.lower()
    _, info, parent, children = parent_and_children(uri, sweep_dir)
    assert info["tracking_uri"].startswith("http://127.0.0.1:") and not info["tracking_uri"].endswith(f":{impostor}")
    assert parent.info.status == "FINISHED"
    assert sorted(float(c.data.params["strength"]) for c in children) == [0.0, 1.0]
    assert all(c.info.status == "FINISHED" for c in children)


def _fake_sinfo(directory: Path, nodes: list[str]) -> str:
    script = directory / "sinfo"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {n}\n" for n in nodes))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{directory}:{os.environ['PATH']}"


def test_slurm_nodes_elsewhere_only_when_sinfo_lists_another_host(tmp_path, monkeypatch):
    here = socket.gethostname()
    monkeypatch.setenv("PATH", _fake_sinfo(tmp_path, [here]))
    assert nodes_elsewhere() is False  # a single-node cluster: loopback reaches the jobs
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("PATH", _fake_sinfo(other, [here, f"{here}-node2"]))
    assert nodes_elsewhere("debug") is True
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sinfo at all: nothing is claimed
    assert nodes_elsewhere() is False
