"""A job's result files on disk, and logging them to MLflow later without recomputing.

``write_results`` puts ``metrics.json``, ``predictions.csv``, ``per_category.csv``, the resolved
``config.yaml``, the signals and ``run.json`` (where the run is tracked) into the job's output
directory. When logging to MLflow then fails (a server gone away), the directory is recorded under
``<cache.dir>/pending/`` and ``resume=true`` or ``python -m steering.results DIR`` logs it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from steering.errors import TrackingError
from steering.util.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
TABLES = ("predictions.csv", "per_category.csv")
CONFIG_FILE = "config.yaml"
PENDING = "pending"


def write_results(
    directory: str | Path,
    metrics: Mapping[str, float],
    tables: Mapping[str, pd.DataFrame],
    config_yaml: str,
    run: Mapping[str, Any],
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a job's results into ``directory`` (each file atomically); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plain = {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in metrics.items()}
    atomic_write_text(directory / METRICS_FILE, json.dumps(plain, indent=1, sort_keys=True))
    for name, frame in tables.items():
        with atomic_path(directory / name) as tmp:
            frame.to_csv(tmp, index=False)
    atomic_write_text(directory / CONFIG_FILE, config_yaml)
    for name, text in (extra_files or {}).items():
        atomic_write_text(directory / name, text)
    atomic_write_text(
        directory / RUN_FILE, json.dumps({**run, "status": "computed", "files": sorted(tables)}, indent=1)
    )
    log.info("results written to %s", directory)
    return directory


def read_run_info(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise TrackingError(f"{directory}: no {RUN_FILE}; not the output directory of a steering run")
    return json.loads(path.read_text())


def mark_logged(directory: str | Path, run_id: str) -> None:
    info = read_run_info(directory)
    info.update(status="logged", run_id=run_id)
    atomic_write_text(Path(directory) / RUN_FILE, json.dumps(info, indent=1))


def artifact_files(directory: str | Path) -> list[Path]:
    """The files of a result directory that go to MLflow as artifacts (tables and signals)."""
    directory = Path(directory)
    arrays = sorted(directory.glob("*.npz"))  # e.g. the random control's draws
    return (
        [directory / t for t in TABLES if (directory / t).is_file()] + sorted(directory.glob("signals_*.json")) + arrays
    )


def log_to_run(client, run_id: str, directory: str | Path) -> None:
    """Log the directory's finite metrics and its artifacts into ``run_id``."""
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    metrics = json.loads((Path(directory) / METRICS_FILE).read_text())
    now = get_current_time_millis()
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for start in range(0, len(batch), 200):
        client.log_batch(run_id, metrics=batch[start : start + 200])
    for path in artifact_files(directory):
        client.log_artifact(run_id, str(path))


# --------------------------------------------------------------------------- pending results
def record_pending(cache_dir: str | Path | None, config_hash: str, directory: str | Path) -> Path | None:
    """Remember that ``directory`` holds results not yet in MLflow (for ``resume=true``)."""
    if cache_dir is None:
        return None
    path = Path(cache_dir) / PENDING / f"{config_hash}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"directory": str(Path(directory).resolve())}))
    return path


def sync_pending(cache_dir: str | Path | None, config_hash: str) -> str | None:
    """Log the pending results of this configuration, if any; returns the run id."""
    if cache_dir is None:
        return None
    path = Path(cache_dir) / PENDING / f"{config_hash}.json"
    if not path.is_file():
        return None
    directory = Path(json.loads(path.read_text())["directory"])
    if not (directory / RUN_FILE).is_file():
        log.warning("pending results %s are gone; the configuration runs again", directory)
        path.unlink(missing_ok=True)
        return None
    run_id = sync(directory)
    path.unlink(missing_ok=True)
    return run_id


def sync(directory: str | Path, tracking_uri: str | None = None) -> str:
    """Log a result directory to its MLflow run (created if the store never saw it); returns the run id.

    ``tracking_uri`` replaces the recorded one (e.g. the server came back at another address).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from steering.tracking.preflight import check_tracking

    directory = Path(directory)
    info = read_run_info(directory)
    if info.get("status") == "logged":
        log.info("%s: already logged as run %s", directory, info.get("run_id"))
        return str(info["run_id"])
    uri = str(tracking_uri or info["tracking_uri"])
    check_tracking(uri)
    client = MlflowClient(uri)
    run_id = info.get("run_id")
    try:
        if run_id:
            try:
                client.get_run(run_id)
            except MlflowException:
                run_id = None
        if not run_id:
            experiment = client.get_experiment_by_name(info["experiment"])
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(info["experiment"])
            run = client.create_run(experiment_id, run_name=info.get("run_name"), tags=info.get("tags", {}))
            run_id = run.info.run_id
            client.log_artifact(run_id, str(directory / CONFIG_FILE))
        client.set_tag(run_id, "synced_from", str(directory.resolve()))
        log_to_run(client, run_id, directory)
        client.set_terminated(run_id, "FINISHED")
    except MlflowException as exc:
        raise TrackingError(f"{uri}: could not log {directory} ({str(exc).splitlines()[0][:200]})") from None
    mark_logged(directory, run_id)
    log.info("logged %s as run %s in %s", directory, run_id, uri)
    return run_id


def logging_failed(uri: str, directory: Path, exc: BaseException) -> TrackingError:
    """The one-line error of a job whose results are on disk but not in MLflow."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return TrackingError(
        f"{uri}: logging failed ({reason}); the results are in {directory}: log them with "
        f"`python -m steering.results {directory}` or rerun with resume=true"
    )
