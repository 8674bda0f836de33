"""A local ``mlflow server`` over the sweep's SQLite store, so parallel jobs never write SQLite directly."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/health`` until it answers 200; raise if the server exits or the time runs out."""
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


def start_server(
    backend_uri: str,
    log_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    advertise_host: str | None = None,
    workers: int = 2,
    timeout: float = 90.0,
) -> LocalServer:
    """Start ``mlflow server`` on ``backend_uri`` and wait until ``/health`` answers.

    Artifacts keep going where each experiment's ``artifact_location`` points (the client writes
    local paths directly), so runs logged through the server look the same as direct ones.
    """
    port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
    log_path = Path(log_dir) / "mlflow_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        *mlflow_executable(),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://{advertise_host or ('127.0.0.1' if host == '0.0.0.0' else host)}:{port}"
    server = LocalServer(proc, uri, log_path)
    try:
        wait_healthy(f"http://127.0.0.1:{port}" if host == "0.0.0.0" else uri, timeout, proc)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while waiting: stop it and let the interrupt end the sweep
        server.stop()
        raise
    except BaseException:
        server.stop()
        raise RuntimeError(f"could not start mlflow server ({' '.join(cmd)}); see {log_path}") from None
    log.info("mlflow server %s on %s (log %s)", uri, backend_uri, log_path)
    return server
