"""The sweep callback's part of ``tracking=offline`` (docs/hpc.md): no store, server or parent run at the start.

The sweep process writes :data:`~steering.tracking.offline.OFFLINE_FILE` into the sweep directory:
the sweep id every job tags its run with, what varies, how many jobs are planned, and the tags and
name of the parent run that ``steering-merge`` creates in the main store later
(:mod:`steering.sweep.merge`). A job that fails before its run exists still gets a FAILED run with
its error, in its own store, so the merged table accounts for every job that started.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from steering.sweep import overrides
from steering.sweep import table as tbl
from steering.sweep.confirmation import ConfirmConfigError, confirm_settings
from steering.sweep.identity import new_sweep_id, sweep_identity
from steering.sweep.interrupt import planned_jobs
from steering.tracking.offline import OFFLINE_FILE, artifact_root, offline_sweep
from steering.tracking.runs import configure, process_tags
from steering.util.files import atomic_write_text

log = logging.getLogger(__name__)


def is_offline(config: DictConfig) -> bool:
    """Whether this sweep's jobs log offline (``tracking.offline``)."""
    return bool(OmegaConf.select(config, "tracking.offline", default=False))


def _check_uri(config: DictConfig) -> None:
    """An offline job needs its own SQLite store; anything else stops the sweep before any job (exit 2)."""
    raw = OmegaConf.to_container(config.tracking, resolve=False).get("uri")
    if not str(raw).startswith("sqlite:///"):
        print(
            f"steering.run: tracking.offline=true needs a SQLite tracking.uri in each job's directory, not {raw!r} "
            "(conf/tracking/offline.yaml; docs/hpc.md)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)


def start_offline_sweep(config: DictConfig) -> dict[str, Any]:
    """Write the sweep's :data:`OFFLINE_FILE` (keeping the sweep id of an earlier start in the same
    directory, so a resumed sweep merges as one); returns its content."""
    _check_uri(config)
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    earlier = offline_sweep(sweep_dir)
    sweep = sweep_identity(config, earlier["sweep_id"] if earlier else new_sweep_id(), sweep_tracking="offline")
    info = {
        "sweep_id": sweep.sweep_id,
        "experiment": str(config.tracking.experiment),
        "varied": sweep.varied,
        "planned_jobs": planned_jobs(config),
        "preset": sweep.preset,
        "run_name": sweep.run_name,
        "start_time": earlier["start_time"] if earlier else int(time.time() * 1000),
        "tags": sweep.tags,
    }
    atomic_write_text(sweep_dir / OFFLINE_FILE, json.dumps(info, indent=2))
    if _confirms(config):
        log.warning(
            "confirm.enabled: an offline sweep is not confirmed (steering-merge builds its table only); "
            "run the chosen row once more with data.eval_split=%s",
            OmegaConf.select(config, "confirm.split", default="test"),
        )
    log.info(
        "sweep %s runs offline: each job logs into mlflow.db in its own directory under %s; "
        "afterwards merge them with: steering-merge %s --tracking-uri <main store>",
        sweep.sweep_id,
        sweep_dir,
        sweep_dir,
    )
    return info


def _confirms(config: DictConfig) -> bool:
    try:
        return confirm_settings(config).enabled
    except ConfirmConfigError:  # the job's own config check names the problem
        return False


def record_failed_job(config: DictConfig, job_return: JobReturn) -> None:
    """In an offline sweep (else nothing): the failed job's run in its own store is FAILED with tag
    ``sweep_error``; one is created when the job failed before its run existed."""
    sweep = offline_sweep(OmegaConf.select(config, "hydra.sweep.dir"))
    if sweep is None or not is_offline(config):
        return
    uri, experiment = str(config.tracking.uri), str(config.tracking.experiment)
    error = job_return._return_value  # reading .return_value would re-raise
    message = f"{type(error).__name__}: {error}"[:1000]
    num = str(config.hydra.job.num)
    experiment_id = configure(uri, experiment, overrides.resolved_or_none(config, "cache.dir"), artifact_root(uri))
    client = MlflowClient(uri)
    query = f"tags.{tbl.TAG_SWEEP_ID} = '{sweep['sweep_id']}' and tags.{tbl.TAG_JOB} = '{num}'"
    latest = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if latest and latest[0].info.status != "FINISHED":
        run_id = latest[0].info.run_id
    else:
        task = [str(o) for o in config.hydra.overrides.task]
        values = overrides.override_values(task)
        name = "failed-" + "-".join(f"{k}={values[k]}" for k in sweep.get("varied", []) if k in values)[:200]
        tags = {tbl.TAG_SWEEP_ID: sweep["sweep_id"], tbl.TAG_JOB: num, tbl.TAG_OVERRIDES: json.dumps(task)}
        run_id = client.create_run(experiment_id, run_name=name, tags={**tags, **process_tags()}).info.run_id
        client.set_terminated(run_id, "FAILED")
    client.set_tag(run_id, "sweep_error", message)
