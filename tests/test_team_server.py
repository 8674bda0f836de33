"""docs/tracking.md's team-server recipe, for real: PostgreSQL on loopback, `mlflow server` over it, a sweep and
a report through it.

PostgreSQL is Debian's package (``apt-get install postgresql``; ``.ci/run`` installs it): a throw-away cluster is
made with its ``initdb``/``pg_ctl`` in a temporary directory, owned by an unprivileged user when the tests run as
root (PostgreSQL refuses to run as root). The test skips, saying why, where PostgreSQL or the driver is missing.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from steering.sweep.server import LocalServer, free_port, mlflow_executable, wait_healthy

PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
USER, PASSWORD, DATABASE = "mlflow", "steering-test-pw", "mlflow"

pytestmark = [
    pytest.mark.skipif(not PG_BINS, reason="PostgreSQL is not installed (Debian: apt-get install postgresql)"),
    pytest.mark.slow,
]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (Debian's `postgres` user, or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            continue
    pytest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _as(ids: tuple[int, int] | None):
    if ids is None:
        return None

    def demote() -> None:
        os.setgid(ids[1])
        os.setuid(ids[0])

    return demote


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1:<free port> with user and database ``mlflow`` (password auth)."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is missing: pip install '.[server]'")
    bindir = Path(PG_BINS[-1]).parent
    ids = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="steering-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    (root / "pw").write_text("superuser-pw\n")
    if ids:
        for path in (root, sockets, root / "pw"):
            os.chown(path, *ids)
    port = free_port()
    run = {"preexec_fn": _as(ids), "capture_output": True, "text": True, "timeout": 120}
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", f"--pwfile={root / 'pw'}", "-E", "UTF8"],
        **run,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
    start = subprocess.run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "pg.log"), "-w", "start"], **run
    )
    assert start.returncode == 0, start.stdout + start.stderr + (root / "pg.log").read_text()
    try:
        # The recipe's user and database creation (createuser/createdb as the postgres superuser).
        sql = f"CREATE USER {USER} PASSWORD '{PASSWORD}'"
        for cmd in (
            [str(bindir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-c", sql],
            [str(bindir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-O", USER, DATABASE],
        ):
            done = subprocess.run(cmd, **run)
            assert done.returncode == 0, done.stdout + done.stderr
        yield {"port": port, "bindir": bindir, "sockets": sockets, "run": run, "root": root}
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """`mlflow server` as docs/tracking.md starts it: psycopg2 driver in the URI, served artifacts, allowed hosts."""
    tmp = tmp_path_factory.mktemp("team")
    port = free_port()
    backend = f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{postgres['port']}/{DATABASE}"
    cmd = [
        *mlflow_executable(), "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(tmp / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--allowed-hosts", f"localhost:{port},127.0.0.1:{port}",
    ]  # fmt: skip
    log_path = tmp / "server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            start_new_session=True,
        )
    server = LocalServer(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_healthy(server.uri, timeout=240, proc=proc)
    except Exception:
        server.stop()
        pytest.fail(f"mlflow server over PostgreSQL did not start:\n{log_path.read_text()[-3000:]}")
    yield {"uri": server.uri, "artifacts": tmp / "artifacts", "log": log_path}
    server.stop()


def test_sweep_and_report_through_a_postgresql_backed_server(postgres, team_server, assets, run_sweep):
    from mlflow.tracking import MlflowClient

    uri = team_server["uri"]
    proc, sweep_dir, _ = run_sweep(
        assets, "team", "tracking=server", "strength=0,1,2", "method=bypass", uri=uri, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    assert info["tracking_uri"] == uri and not (sweep_dir / "mlflow_server.log").exists()

    client = MlflowClient(uri)
    parent = client.get_run(info["run_id"])
    children = client.search_runs([info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}'")
    assert parent.info.status == "FINISHED"
    assert sorted(float(c.data.params["strength"]) for c in children) == [0.0, 1.0, 2.0]
    assert all(c.info.status == "FINISHED" and "dr_valence" in c.data.metrics for c in children)
    assert parent.data.metrics["n_jobs"] == 3 and "mlflow.note.content" in parent.data.tags
    # every artifact, listed through the server and lying in its artifacts destination
    for child in children:
        listed = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "predictions.csv", "per_category.csv", "signals_9bin.json"} <= listed
    assert {"comparison.csv", "comparison.md", "strength_response.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    stored = {p.name for p in team_server["artifacts"].rglob("*") if p.is_file()}
    assert {"predictions.csv", "comparison.csv", "strength_response.png"} <= stored

    # the runs live in PostgreSQL
    query = f"SELECT count(*) FROM runs WHERE experiment_id = {info['experiment_id']}"
    count = subprocess.run(
        [str(postgres["bindir"] / "psql"), "-h", str(postgres["sockets"]), "-p", str(postgres["port"]),
         "-U", "postgres", "-d", DATABASE, "-tAc", query],
        **postgres["run"],
    )  # fmt: skip
    assert count.returncode == 0 and int(count.stdout.strip()) == 4, count.stdout + count.stderr

    # the report, rebuilt from the server
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
    out = assets["tmp"] / "team-reports"
    report = subprocess.run(
        [sys.executable, "-m", "steering.report", "tracking=server", f"sweep={info['sweep_id']}", f"out={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=assets["tmp"],
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"# Sweep {info['sweep_id']}" in report.stdout and "3 configurations, 0 not finished" in report.stdout
    import pandas as pd

    table = pd.read_csv(out / info["sweep_id"] / "comparison.csv")
    assert sorted(table["run_id"]) == sorted(c.info.run_id for c in children)
