"""Copying runs from offline stores (``tracking=offline``) into another MLflow store, idempotently.

A copy keeps the run's name, start and end time, status, params, every metric's full history, tags,
dataset inputs and artifacts. It is tagged with the source run's id (:data:`MERGED_FROM`, stable:
a store copied back from a cluster keeps its run ids) and with what was copied (:data:`MERGED_STATE`:
the source's status and the copy's role), so merging again skips what is already there and replaces
a copy whose source has moved on (a job that was still running at the first merge).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.tracking import MlflowClient

from steering.tracking.offline import ARTIFACTS_DIR, STORE_FILE
from steering.tracking.preflight import check_tracking, sqlite_path, store_lock, tracking_environment
from steering.tracking.store_template import seed_sqlite_store

log = logging.getLogger(__name__)

MERGED_FROM = "merged_from_run_id"
MERGED_STATE = "merged_state"
MERGED_STORE = "merged_from_store"
BATCH = 100  # params per log_batch (MLflow's limit)
METRIC_BATCH = 1000


@dataclass(frozen=True)
class Copied:
    """One source run and its copy; ``new``: this merge wrote it (not found already merged)."""

    source_id: str
    run_id: str
    new: bool


def _natural(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_stores(directory: str | Path) -> list[Path]:
    """The offline stores (``mlflow.db``) at or below ``directory``, in job order (``2`` before ``10``)."""
    directory = Path(directory)
    return sorted((p for p in directory.rglob(STORE_FILE) if p.is_file()), key=_natural)


def open_target(uri: str, cache_dir: str | Path | None = None) -> MlflowClient:
    """The main store, checked (one-line error when unusable) and, when a new SQLite file, started from
    the migrated template under ``cache_dir`` (:mod:`steering.tracking.store_template`)."""
    tracking_environment()
    check_tracking(uri)
    path = sqlite_path(uri)
    if path is not None:
        with store_lock(uri):
            seed_sqlite_store(path, cache_dir)
    return MlflowClient(uri)


def store_client(store: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{store.resolve()}")


def store_runs(client: MlflowClient) -> list[Run]:
    """Every run of a store (deleted ones excluded), oldest first, with inputs."""
    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs: list[Run] = []
    token = None
    while experiment_ids:
        page = client.search_runs(experiment_ids, "", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted((client.get_run(r.info.run_id) for r in runs), key=lambda r: r.info.start_time or 0)


def artifacts_of(store: Path, run: Run) -> Path | None:
    """A source run's artifact folder: beside its store (where it is after the job directory was copied
    elsewhere), else where the run recorded it; None when it has none."""
    beside = store.parent / ARTIFACTS_DIR / run.info.run_id / "artifacts"
    if beside.is_dir():
        return beside
    uri = run.info.artifact_uri or ""
    recorded = Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
    return recorded if uri and recorded.is_dir() else None


def experiment_id_for(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name`` in the target store, created if needed."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def find_copy(client: MlflowClient, experiment_ids: Iterable[str], source_id: str) -> Run | None:
    runs = client.search_runs(list(experiment_ids), f"tags.{MERGED_FROM} = '{source_id}'", max_results=10)
    return runs[0] if runs else None


def copy_run(
    target: MlflowClient,
    experiment_id: str,
    source: MlflowClient,
    run: Run,
    *,
    tags: Mapping[str, str],
    state: str,
    artifacts: Path | None,
) -> Copied:
    """Copy ``run`` into ``experiment_id`` of ``target`` with ``tags`` (the copy's tags: the caller adds
    or drops, e.g. the parent link), unless a copy in state ``state`` is already there."""
    source_id = run.info.run_id
    existing = find_copy(target, [experiment_id], source_id)
    if existing is not None and existing.data.tags.get(MERGED_STATE) == state:
        return Copied(source_id, existing.info.run_id, False)
    if existing is not None:  # the source moved on (finished, failed, superseded): the copy follows it
        log.info("run %s changed since it was merged as %s: copied again", source_id, existing.info.run_id)
        target.delete_run(existing.info.run_id)
    all_tags = {**tags, MERGED_FROM: source_id, MERGED_STATE: state}
    copy = target.create_run(experiment_id, start_time=run.info.start_time, tags=all_tags, run_name=run.info.run_name)
    run_id = copy.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for start in range(0, len(params), BATCH):
        target.log_batch(run_id, params=params[start : start + BATCH])
    history = [m for key in run.data.metrics for m in source.get_metric_history(source_id, key)]
    for start in range(0, len(history), METRIC_BATCH):
        metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in history[start : start + METRIC_BATCH]]
        target.log_batch(run_id, metrics=metrics)
    inputs = list(getattr(run.inputs, "dataset_inputs", None) or [])
    if inputs:
        target.log_inputs(run_id, datasets=inputs)
    if artifacts is not None:
        target.log_artifacts(run_id, str(artifacts))
    if run.info.status != "RUNNING":
        target.set_terminated(run_id, run.info.status, end_time=run.info.end_time)
    return Copied(source_id, run_id, True)


def merge_store(target: MlflowClient, store: Path, experiment: str | None = None) -> list[Copied]:
    """Copy every run of one offline store into ``target`` (into its own experiment's name, or
    ``experiment``); returns what was copied or found already merged."""
    source = store_client(store)
    names = {e.experiment_id: e.name for e in source.search_experiments(view_type=ViewType.ALL)}
    copied = []
    for run in store_runs(source):
        experiment_id = experiment_id_for(target, experiment or names[run.info.experiment_id])
        tags = {**run.data.tags, MERGED_STORE: str(store.resolve())}
        state = f"{run.info.status}/run"
        copied.append(
            copy_run(target, experiment_id, source, run, tags=tags, state=state, artifacts=artifacts_of(store, run))
        )
        if run.info.status == "RUNNING":
            log.warning("run %s in %s is still RUNNING (a job still running, or killed)", run.info.run_id, store)
    return copied
