"""``tracking=offline``: each job logs to its own SQLite store in its output directory (docs/hpc.md).

For compute nodes with no route to a tracking server: nothing is shared between jobs and nothing
needs a network. A sweep opens no parent run; its callback writes :data:`OFFLINE_FILE` into the
sweep directory instead (the sweep id, what varies, the parent run's tags to be), every job tags its
run with that sweep id, and ``steering-merge`` later copies the stores into the main one, where the
parent run and the comparison table are made (:mod:`steering.tracking.merge`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steering.tracking.preflight import sqlite_path

#: Written by the sweep callback into an offline sweep's directory instead of ``mlflow_parent.json``.
OFFLINE_FILE = "offline_sweep.json"
#: The folder beside an offline store that holds its runs' artifacts (``<folder>/<run id>/artifacts``).
ARTIFACTS_DIR = "mlartifacts"
#: The file name of a job's own store (``conf/tracking/offline.yaml``).
STORE_FILE = "mlflow.db"


def offline_sweep(sweep_dir: str | Path | None) -> dict[str, Any] | None:
    """The offline sweep this job belongs to (its :data:`OFFLINE_FILE`), if any."""
    if sweep_dir is None:
        return None
    path = Path(sweep_dir) / OFFLINE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def artifact_root(uri: str) -> str:
    """Where a new experiment of the offline store ``uri`` keeps its artifacts: beside the store, so a
    job's directory holds everything of its run (and can be copied elsewhere as one folder)."""
    path = sqlite_path(uri)
    if path is None:
        from steering.errors import TrackingError

        raise TrackingError(f"tracking.uri={uri}: tracking.offline=true needs a SQLite store (sqlite:///...)")
    return str(path.parent.resolve() / ARTIFACTS_DIR)
