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

from steering.errors import ResultError, TrackingError
from steering.util.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
TABLES = ("predictions.csv", "per_category.csv")
CONFIG_FILE = "config.yaml"
PENDING = "pending"
#: ``run.json`` status of results that failed the checks (kept on disk, never logged).
REJECTED = "rejected"


def write_results(
    directory: str | Path,
    metrics: Mapping[str, float],
    tables: Mapping[str, pd.DataFrame],
    config_yaml: str,
    run: Mapping[str, Any],
    extra_files: Mapping[str, str] | None = None,
    documents: Mapping[str, Any] | None = None,
) -> Path:
    """Write a job's results into ``directory`` (each file atomically); returns the directory.

    ``documents`` (file name -> JSON-able value, e.g. the intervention ledger) are written as JSON
    (non-finite numbers as null), listed in ``run.json`` and logged as artifacts."""
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
    for name, document in (documents or {}).items():
        atomic_write_text(directory / name, json.dumps(_finite(document), indent=1, allow_nan=False))
    files = {"files": sorted(tables), "documents": sorted(documents or {})}
    atomic_write_text(directory / RUN_FILE, json.dumps({**run, "status": "computed", **files}, indent=1))
    log.info("results written to %s", directory)
    return directory


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_run_info(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise TrackingError(f"{directory}: no {RUN_FILE}; not the output directory of a steering run")
    return json.loads(path.read_text())


def _update_run_info(directory: str | Path, **changes: Any) -> None:
    info = read_run_info(directory)
    info.update(changes)
    atomic_write_text(Path(directory) / RUN_FILE, json.dumps(info, indent=1))


def mark_logged(directory: str | Path, run_id: str, tracking_uri: str | None = None) -> None:
    """The directory's results are in MLflow as ``run_id`` (in ``tracking_uri`` when another than recorded)."""
    changes: dict[str, Any] = {"status": "logged", "run_id": run_id}
    if tracking_uri:
        changes["tracking_uri"] = tracking_uri
    _update_run_info(directory, **changes)


def note_run_id(directory: str | Path, run_id: str) -> None:
    """The job's run exists (still logging): a later sync logs into it instead of creating another."""
    _update_run_info(directory, run_id=run_id)


def mark_rejected(directory: str | Path, reason: str) -> None:
    """The results failed the checks (non-finite or implausible): kept for inspection, never logged."""
    _update_run_info(directory, status=REJECTED, reason=reason)


def artifact_files(directory: str | Path) -> list[Path]:
    """The files of a result directory that go to MLflow as artifacts (tables, signals, arrays, documents)."""
    directory = Path(directory)
    arrays = sorted(directory.glob("*.npz"))  # e.g. the random control's draws
    info = directory / RUN_FILE
    named = json.loads(info.read_text()).get("documents", []) if info.is_file() else []
    documents = [directory / d for d in named if (directory / d).is_file()]  # e.g. the intervention ledger
    return (
        [directory / t for t in TABLES if (directory / t).is_file()]
        + sorted(directory.glob("signals_*.json"))
        + arrays
        + documents
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

    ``tracking_uri`` replaces the recorded one (e.g. the server came back at another address, or a
    copy for another store): results already logged elsewhere are logged there as a new run, once.
    Rejected results (non-finite or implausible predictions) are refused.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from steering.tracking.preflight import check_tracking

    directory = Path(directory)
    info = read_run_info(directory)
    if info.get("status") == REJECTED:
        raise ResultError(f"{directory}: results were rejected ({info.get('reason', 'failed the checks')}); not logged")
    recorded = str(info["tracking_uri"])
    uri = str(tracking_uri or recorded)
    copies = dict(info.get("copies") or {})
    if info.get("status") == "logged" and uri == recorded or uri in copies:
        run_id = info["run_id"] if uri == recorded else copies[uri]
        log.info("%s: already logged as run %s in %s", directory, run_id, uri)
        return str(run_id)
    check_tracking(uri)
    known = info.get("run_id") if info.get("status") != "logged" else None
    try:
        run_id = _log_directory(MlflowClient(uri), directory, info, known)
    except MlflowException as exc:
        raise TrackingError(f"{uri}: could not log {directory} ({str(exc).splitlines()[0][:200]})") from None
    if info.get("status") == "logged":  # a copy into another store: the first record stays
        _update_run_info(directory, copies={**copies, uri: run_id})
    else:
        mark_logged(directory, run_id, uri if uri != recorded else None)
    log.info("logged %s as run %s in %s", directory, run_id, uri)
    return run_id


def _log_directory(client, directory: Path, info: Mapping[str, Any], run_id: str | None) -> str:
    """Log into ``run_id`` when the store has it, else into a new run with the recorded tags and params."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

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
        params = [Param(k, str(v)) for k, v in (info.get("params") or {}).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        client.log_artifact(run_id, str(directory / CONFIG_FILE))
    client.set_tag(run_id, "synced_from", str(directory.resolve()))
    log_to_run(client, run_id, directory)
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


def logging_failed(uri: str, directory: Path, exc: BaseException) -> TrackingError:
    """The one-line error of a job whose results are on disk but not in MLflow."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return TrackingError(
        f"{uri}: logging failed ({reason}); the results are in {directory}: log them with "
        f"`python -m steering.results {directory}` or rerun with resume=true"
    )
