"""``steering-merge``: the stores of ``tracking=offline`` jobs into the main store, sweeps with parent and table.

For each offline sweep directory (one with :data:`~steering.tracking.offline.OFFLINE_FILE`) the
parent run is created in the main store (once: found again by its sweep id), every job's run is
copied under it (:mod:`steering.tracking.merge`), and the sweep is finished as the sweep callback
finishes an online one (:func:`steering.sweep.callback.finish_sweep`): ``comparison.csv``/``.md``,
the figure and analyses into the sweep directory and onto the parent, its summary and status.
Offline runs outside any sweep are copied as they are. Merging again copies only what changed and
rebuilds a sweep's report only then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steering.errors import TrackingError
from steering.sweep import table as tbl
from steering.sweep.callback import ActiveSweep, finish_sweep
from steering.sweep.confirmation import ConfirmSettings
from steering.sweep.contrasts import bootstrap_settings
from steering.tracking.merge import (
    MERGED_STORE,
    Copied,
    artifacts_of,
    copy_run,
    experiment_id_for,
    find_stores,
    merge_store,
    open_target,
    store_client,
    store_runs,
)
from steering.tracking.offline import OFFLINE_FILE, offline_sweep
from steering.tracking.resume import DEAD_TAG

log = logging.getLogger(__name__)

SUPERSEDED_TAG = "superseded_in_sweep"


@dataclass
class Merged:
    """What one merge did for one sweep (``sweep_id`` set) or for runs outside any sweep."""

    directory: Path
    copies: list[Copied]
    experiment_id: str | None = None
    sweep_id: str | None = None
    parent_run_id: str | None = None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(c.new for c in self.copies)


def merge(
    directories: Sequence[str | Path], uri: str, experiment: str | None = None, cache_dir: str | None = None
) -> list[Merged]:
    """Merge every offline sweep and run found at or below ``directories`` into ``uri``."""
    results = []
    for directory in map(Path, directories):
        if not directory.is_dir():
            raise TrackingError(f"{directory}: not a directory")
        sweeps = sorted({p.parent for p in directory.rglob(OFFLINE_FILE)})
        in_sweeps = {s for sweep in sweeps for s in find_stores(sweep)}
        loose = [s for s in find_stores(directory) if s not in in_sweeps]
        if not sweeps and not loose:
            raise TrackingError(
                f"{directory}: no {OFFLINE_FILE} and no mlflow.db below it: not the output of a tracking=offline "
                "run or sweep (docs/hpc.md)"
            )
        results += [merge_sweep(sweep, uri, experiment, cache_dir) for sweep in sweeps]
        if loose:
            results.append(merge_runs(directory, loose, uri, experiment, cache_dir))
    return results


def merge_runs(
    directory: Path, stores: Sequence[Path], uri: str, experiment: str | None, cache_dir: str | None
) -> Merged:
    """Offline runs outside any sweep (``tracking=offline`` single runs), copied as they are."""
    target = open_target(uri, cache_dir)
    copies = [c for store in stores for c in merge_store(target, store, experiment)]
    return Merged(directory, copies)


def merge_sweep(sweep_dir: Path, uri: str, experiment: str | None = None, cache_dir: str | None = None) -> Merged:
    """One offline sweep: its parent, its jobs' runs under it, then its report (when anything changed)."""
    sweep = offline_sweep(sweep_dir)
    assert sweep is not None
    target = open_target(uri, cache_dir)
    experiment_id = experiment_id_for(target, experiment or sweep["experiment"])
    parent_id, created = _parent(target, experiment_id, sweep, sweep_dir)
    copies = [c for store in find_stores(sweep_dir) for c in _copy_jobs(target, experiment_id, store, sweep, parent_id)]
    merged = Merged(sweep_dir, copies, experiment_id, sweep["sweep_id"], parent_id)
    if not created and not merged.new:
        merged.notes.append("nothing new since the last merge; the report stays as it is")
        return merged
    runs = tbl.find_sweep(target, sweep["sweep_id"], [experiment_id])
    finished = [r for r in runs.children if r.info.status == "FINISHED"]
    info = {
        "run_id": parent_id,
        "sweep_id": sweep["sweep_id"],
        "backend_uri": uri,
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "varied": sweep["varied"],
        "planned_jobs": sweep.get("planned_jobs"),
        "preset": sweep.get("preset"),
    }
    bootstrap = bootstrap_settings(finished[0].data.params if finished else {})
    merged.report = finish_sweep(ActiveSweep(info, sweep_dir, ConfirmSettings(enabled=False), bootstrap))
    return merged


def _parent(target: MlflowClient, experiment_id: str, sweep: dict[str, Any], sweep_dir: Path) -> tuple[str, bool]:
    """The sweep's parent run in the main store: found by its sweep id, else created; (run id, created)."""
    query = f"tags.{tbl.TAG_SWEEP_ID} = '{sweep['sweep_id']}' and tags.{tbl.TAG_ROLE} = 'parent'"
    found = target.search_runs([experiment_id], query, max_results=1)
    if found:
        return found[0].info.run_id, False
    tags = {**sweep["tags"], "sweep_dir": str(sweep_dir.resolve())}
    run = target.create_run(experiment_id, start_time=sweep.get("start_time"), tags=tags, run_name=sweep["run_name"])
    log.info("sweep %s: parent run %s created in %s", sweep["sweep_id"], run.info.run_id, target.tracking_uri)
    return run.info.run_id, True


def _current(runs: Sequence[Run]) -> dict[str, Run]:
    """Per job number, the run that is the job's row: the newest FINISHED one, else the newest (a job
    resumed in the same directory has its earlier attempts in its store too)."""
    rows: dict[str, Run] = {}
    for run in runs:  # oldest first
        job = run.data.tags.get(tbl.TAG_JOB, run.info.run_id)
        held = rows.get(job)
        if held is None or run.info.status == "FINISHED" or held.info.status != "FINISHED":
            rows[job] = run
    return rows


def _copy_jobs(
    target: MlflowClient, experiment_id: str, store: Path, sweep: dict[str, Any], parent_id: str
) -> list[Copied]:
    """A job store's runs: its current run as a child of the parent, earlier attempts outside the sweep."""
    source = store_client(store)
    runs = store_runs(source)
    current = {r.info.run_id for r in _current(runs).values()}
    copies = []
    for run in runs:
        tags = {**run.data.tags, MERGED_STORE: str(store.resolve())}
        if run.info.run_id in current:
            tags.update({tbl.TAG_SWEEP_ID: sweep["sweep_id"], "mlflow.parentRunId": parent_id})
            state = f"{run.info.status}/child"
        else:
            tags.pop(tbl.TAG_SWEEP_ID, None)
            tags[SUPERSEDED_TAG] = sweep["sweep_id"]
            state = f"{run.info.status}/superseded"
        artifacts = artifacts_of(store, run)
        copy = copy_run(target, experiment_id, source, run, tags=tags, state=state, artifacts=artifacts)
        if copy.new and run.info.run_id not in current and run.info.status == "RUNNING":
            # an attempt left RUNNING by a killed job that a later attempt replaced: it will never end
            target.set_tag(copy.run_id, DEAD_TAG, "a later attempt of the same job replaced it")
            target.set_terminated(copy.run_id, "KILLED")
        copies.append(copy)
    return copies
