"""A private ``mlflow server`` over the sweep's SQLite store, so parallel jobs never write SQLite directly.

What makes it dependable on a shared, loaded machine (docs/tracking.md):

- **one uvicorn worker**: with several, uvicorn's supervisor kills any worker that misses its 5-s ping,
  which a loaded machine makes happen in a loop; one worker serves a sweep's jobs easily;
- **no MLflow job runner** (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): a sweep submits no MLflow jobs,
  and the runner's extra processes slowed the start (27 s instead of 8 s until uvicorn bound its port,
  measured once each on a shared 2-core machine);
- **the server binds its port itself**: a port found free may be taken before the server binds it, so a
  start that fails with "address already in use" is tried again on another port;
- **trusted only when it serves this store**: a random token is written into the store as an experiment
  tag before the start, and the server must return it over MLflow's REST API; whatever else answers on
  the port (even with 200 on ``/health``) is not taken for the server;
- **a generous wait** that ends at once when the server's process exits; everything it prints goes to
  ``mlflow_server.log`` in the sweep directory, which every error names.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from steering.errors import TrackingError

log = logging.getLogger(__name__)

LOG_NAME = "mlflow_server.log"
TOKEN_PREFIX = "steering.server_check."
BIND_ERRORS = ("address already in use", "[errno 98]")
DEFAULT_TIMEOUT = 300.0
START_ATTEMPTS = 5


class ServerStartError(TrackingError):
    """The sweep's tracking server did not start; the message names its log file."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (it may be taken before it is used: callers must handle that)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/health`` until it answers 200; raise if the server exits or the time runs out.

    Only for a server whose port nobody else can hold (a test's own); the sweep's server is checked
    with a token instead (:func:`start_server`).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


@dataclass
class LocalServer:
    """A running ``mlflow server``; ``stop()`` ends it (and its workers)."""

    process: subprocess.Popen
    uri: str
    log_path: Path

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, 15)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(5)


def mlflow_executable() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


@dataclass(frozen=True)
class StoreToken:
    """A random experiment tag written into the store, which only a server over that store can return."""

    experiment_id: str
    key: str
    value: str

    @classmethod
    def write(cls, backend_uri: str, experiment_id: str) -> StoreToken:
        from mlflow.tracking import MlflowClient

        value = uuid.uuid4().hex
        token = cls(experiment_id, TOKEN_PREFIX + value[:12], value)  # a key per start: sweeps never clash
        MlflowClient(backend_uri).set_experiment_tag(experiment_id, token.key, token.value)
        return token

    def remove(self, backend_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient(backend_uri).delete_experiment_tag(self.experiment_id, self.key)
        except Exception:  # a leftover tag is harmless
            log.debug("could not remove the server check tag %s", self.key, exc_info=True)

    def served_by(self, url: str) -> bool | None:
        """True: ``url`` is an MLflow server over this store; False: something else answers; None: nothing does."""
        query = f"{url}/api/2.0/mlflow/experiments/get?experiment_id={self.experiment_id}"
        try:
            with urllib.request.urlopen(query, timeout=5) as resp:
                body = json.loads(resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError:
            return False
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None
        except ValueError:  # not JSON
            return False
        experiment = body.get("experiment") if isinstance(body, dict) else None
        tags = experiment.get("tags") or [] if isinstance(experiment, dict) else []
        return any(isinstance(t, dict) and t.get("key") == self.key and t.get("value") == self.value for t in tags)


def _log_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _await(server: LocalServer, check_url: str, token: StoreToken, timeout: float, offset: int) -> bool:
    """Wait until ``server`` serves ``token``: True; False when its port was taken (try another).

    Raises :class:`ServerStartError` when it exits or the time runs out.
    """
    deadline = time.monotonic() + timeout
    impostor = False
    while True:
        served = token.served_by(check_url)
        if served:
            return True
        impostor = impostor or served is False
        taken = any(marker in _log_since(server.log_path, offset).lower() for marker in BIND_ERRORS)
        if taken:
            server.stop()
            return False
        if server.process.poll() is not None:
            raise ServerStartError(
                f"the sweep's mlflow server exited with code {server.process.returncode} before serving the "
                f"store; see {server.log_path}"
            )
        if time.monotonic() > deadline:
            server.stop()
            other = f"; another program answers on {check_url}" if impostor else ""
            raise ServerStartError(
                f"the sweep's mlflow server did not serve the store within {timeout:.0f} s{other} "
                f"(hydra.callbacks.mlflow_sweep.server_timeout); see {server.log_path}"
            )
        time.sleep(0.5)


def _command(backend_uri: str, host: str, port: int, workers: int, advertise_host: str | None) -> list[str]:
    cmd = [*mlflow_executable(), "server", "--backend-store-uri", backend_uri, "--host", host, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    if advertise_host and not advertise_host.startswith("127.") and advertise_host != "localhost":
        # MLflow answers 403 to a Host header it does not know; jobs elsewhere send the advertised name.
        allowed = [advertise_host, f"{advertise_host}:*", "localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]
        cmd += ["--allowed-hosts", ",".join(allowed)]
    return cmd


def guarded(cmd: list[str]) -> list[str]:
    """``cmd`` under :mod:`steering.sweep.guard`: the server ends with this process, even one SIGKILLed."""
    return [sys.executable, "-m", "steering.sweep.guard", str(os.getpid()), "--", *cmd]


def start_server(
    backend_uri: str,
    log_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    advertise_host: str | None = None,
    workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    experiment_id: str = "0",
) -> LocalServer:
    """Start ``mlflow server`` on ``backend_uri`` and wait until it serves that store (see the module docstring).

    ``port``: the first port to try (another one when it is taken); ``timeout``: seconds each attempt
    may take; ``experiment_id``: an active experiment of the store, where the check's token is written.
    Artifacts keep going where each experiment's ``artifact_location`` points (the client writes local
    paths directly), so runs logged through the server look the same as direct ones.
    """
    log_path = Path(log_dir) / LOG_NAME
    log_path.parent.mkdir(parents=True, exist_ok=True)
    local = "127.0.0.1" if host == "0.0.0.0" else host
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    token = StoreToken.write(backend_uri, experiment_id)
    try:
        for attempt in range(START_ATTEMPTS):
            port = port if attempt == 0 and port else free_port(host)
            cmd = _command(backend_uri, host, port, workers, advertise_host)
            offset = log_path.stat().st_size if log_path.exists() else 0
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    guarded(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            server = LocalServer(proc, f"http://{advertise_host or local}:{port}", log_path)
            try:
                if _await(server, f"http://{local}:{port}", token, timeout, offset):
                    log.info("mlflow server %s on %s (log %s)", server.uri, backend_uri, log_path)
                    return server
            except BaseException:  # Ctrl-C, SIGTERM or a failed start: never leave the server behind
                server.stop()
                raise
            log.warning("port %d is taken; starting the sweep's mlflow server on another port", port)
    finally:
        token.remove(backend_uri)
    raise ServerStartError(f"no free port for the sweep's mlflow server after {START_ATTEMPTS} tries; see {log_path}")


def nodes_elsewhere(partition: str | None = None) -> bool:
    """Whether SLURM may run jobs on another machine than this one (``sinfo`` lists another node).

    False where ``sinfo`` is missing or fails: nothing can be said then, so nothing is claimed.
    """
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return False
    cmd = [sinfo, "-h", "-o", "%n", *(["-p", partition] if partition else [])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    nodes = {line.strip() for line in done.stdout.splitlines() if line.strip()}
    if done.returncode != 0 or not nodes:
        return False
    here = {socket.gethostname(), socket.getfqdn(), "localhost"}
    here |= {name.split(".")[0] for name in here}
    return any(node not in here and node.split(".")[0] not in here for node in nodes)
