"""Tracking preflight: is the MLflow store or server usable, answered within seconds, before any work.

Also bounds MLflow's HTTP retries for our processes (a server that goes away mid-run fails the job
in about a minute instead of ~8 minutes of retries) and serialises the creation of a fresh SQLite
store, which two jobs starting at once would otherwise race on.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from steering.errors import ConfigError, TrackingError

#: Our defaults (the user's environment wins): 3 quick retries, 15 s per request.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
PREFLIGHT_TIMEOUT = 8.0
#: Tables every MLflow SQLite store has (a non-empty database without them belongs to something else).
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})
#: Set by the apps for themselves and their workers (the user's environment wins): no telemetry
#: calls from our runs, and no upload bar per child run (noise in a sweep's log).
PROCESS_ENV_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def bound_http_retries() -> None:
    """Set MLflow's HTTP retry/timeout variables for this process and its children, unless set."""
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def tracking_environment() -> None:
    """The MLflow environment of our apps, unless the user set it: bounded HTTP retries, no telemetry,
    no per-run upload bar. Called by the apps before MLflow is first imported (telemetry is decided
    at import) and again when a store is configured; idempotent."""
    for key, value in PROCESS_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    bound_http_retries()


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def check_tracking(uri: str, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Raise :class:`TrackingError` naming ``uri`` when the store cannot be written or the server not reached."""
    if not uri:
        raise TrackingError("tracking.uri: is empty")
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(uri, path, timeout)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
    elif uri.startswith("sqlite:"):
        raise TrackingError(f"{uri}: a SQLite URI needs an absolute path, sqlite:////abs/path.db or sqlite:///path.db")


def _check_sqlite(uri: str, path: Path, timeout: float) -> None:
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise TrackingError(f"{uri}: {existing} is not a directory")
    try:  # a real write (root passes os.access checks on read-only mounts and /proc)
        if existing == parent:
            with open(_lock_path(path), "a"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise OSError(f"{existing} is not writable")
    except OSError as exc:
        raise TrackingError(f"{uri}: cannot create the store there ({exc.strerror or exc})") from None
    if path.is_dir():
        raise TrackingError(f"{uri}: {path} is a directory, not a SQLite file")
    if not path.exists():
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise TrackingError(f"{uri}: {path} is not readable and writable")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise TrackingError(f"{uri}: {path} is not a usable SQLite store ({exc})") from None
    if tables and not tables >= MLFLOW_TABLES:  # MLflow would add its tables to another program's database
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise TrackingError(
            f"{uri}: {path} is a SQLite database of something else (tables {shown}), not an MLflow store; "
            "give a new file or an existing MLflow store"
        )


def check_writable_dir(directory: str | Path | None, option: str) -> None:
    """Raise :class:`ConfigError` naming ``option`` when files cannot be created in ``directory`` (or,
    while it does not exist, in the folder it would be created in): a read-only mount, no permission.

    Probed with a real file, removed at once (root passes ``os.access`` on read-only mounts)."""
    if directory is None:
        return
    path = Path(directory).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ConfigError(option, f"{existing or path} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(option, f"cannot write into {existing} ({exc.strerror or exc})") from None


#: Answers that still mean "an MLflow server is there" (behind authentication).
AUTH_CODES = (401, 403)


def _check_server(uri: str, timeout: float) -> None:
    base = uri.rstrip("/")
    code = None
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        try:
            with urllib.request.urlopen(base + path, timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            if exc.code in AUTH_CODES:
                return
            code = exc.code
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"{uri}: tracking server not reachable ({reason})") from None
    raise TrackingError(f"{uri}: does not answer as an MLflow tracking server (HTTP {code})")


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a SQLite store while it is created or migrated; a no-op otherwise."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(_lock_path(path)):
        yield
