"""MLflow tracking for steering runs: store set-up, flattened params, tags, sweep nesting."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml

from steering.tracking.offline import artifact_root, offline_sweep
from steering.tracking.preflight import sqlite_path, store_lock, tracking_environment
from steering.tracking.store_template import seed_sqlite_store
from steering.util.hashing import flatten, plain

if TYPE_CHECKING:
    from steering.config.schema import RunConfig

log = logging.getLogger(__name__)

#: Written by the sweep callback into the sweep directory; every job of the sweep reads it.
PARENT_FILE = "mlflow_parent.json"
MAX_PARAM_LENGTH = 6000
#: What a job run's metrics mean; ``resume=true`` reuses only runs of this version. Raised whenever a
#: logged metric changes meaning (2: ``dr_<t>_p`` is the paired-bootstrap p, Williams' p moved to
#: ``dr_<t>_williams_p``), so a table never mixes two kinds of p.
RESULTS_VERSION = "2"


def git_commit(where: str | Path | None = None) -> str:
    """The commit of the checkout holding the ``steering`` package (``-dirty`` when modified), or ``unknown``.

    Resolved from the package's own location, not the working directory, so runs started from any
    folder record the code they ran; ``unknown`` only when the package is not in a git checkout.
    """
    if where is None:
        return _own_commit()
    return _commit_of(Path(where))


@functools.cache
def _own_commit() -> str:
    """The package's own commit, asked once per process (two git calls per job under load otherwise):
    the code a running process runs cannot change under it."""
    import steering

    return _commit_of(Path(steering.__file__).resolve().parent)


def _commit_of(cwd: Path) -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "") if sha else "unknown"


def configure(
    uri: str, experiment: str, cache_dir: str | Path | None = None, artifact_location: str | None = None
) -> str:
    """Point MLflow at ``uri``, create ``experiment`` if needed; returns the experiment id.

    ``cache_dir``: where a new SQLite store's migrated template lives (see :mod:`store_template`);
    ``None`` lets MLflow migrate a new store itself. ``artifact_location``: where a new experiment
    keeps its artifacts (``tracking=offline``: beside the store); ``None``: MLflow's default.
    """
    from steering.tracking.mlflow_logs import route_mlflow_logging

    route_mlflow_logging()  # MLflow's messages in Hydra's format (and the job's log file)
    tracking_environment()  # bounded HTTP retries for this process and its workers
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):  # two jobs creating a fresh SQLite store at once would race
        path = sqlite_path(uri)
        if path is not None:
            seed_sqlite_store(path, cache_dir)
        if artifact_location is not None and mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_location)
        exp = mlflow.set_experiment(experiment)
    return exp.experiment_id


def existing_experiment(uri: str, experiment: str) -> str | None:
    """Point MLflow at ``uri`` and return the id of ``experiment`` there, creating neither the store nor
    the experiment (a store where nothing ran holds no previous result; the job's run creates them)."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        return None
    tracking_environment()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    return exp.experiment_id if exp is not None else None


def find_finished(experiment_id: str, config_digest: str) -> mlflow.entities.Run | None:
    """The latest FINISHED run in ``experiment_id`` with this config hash and today's meaning of its
    metrics (:data:`RESULTS_VERSION`), for resuming sweeps."""
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=(
            f"tags.config_hash = '{config_digest}' and tags.results_version = '{RESULTS_VERSION}'"
            " and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        output_format="list",
        max_results=1,
    )
    return runs[0] if runs else None


def sweep_parent(sweep_dir: str | Path | None) -> dict[str, str] | None:
    """The parent run written by the sweep callback, if this job belongs to a tracked sweep."""
    if sweep_dir is None:
        return None
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def hydra_job_tags() -> dict[str, str]:
    """The Hydra job number and its task overrides, so a sweep table can show each job's choices."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    num = OmegaConf.select(hydra_cfg, "job.num", default=None, throw_on_missing=False)
    if num is None:  # the sweep process itself (a sweep's confirmation run), not one of its jobs
        return {}
    return {"sweep_job_num": str(num), "sweep_overrides": json.dumps(list(hydra_cfg.overrides.task))}


def sweep_choices(sweep_dir: str | Path | None) -> dict[str, str]:
    """In a sweep: this job's values of the keys the sweep varies, as typed (``{"method": "bypass"}``)."""
    parent = sweep_parent(sweep_dir) or offline_sweep(sweep_dir)
    if not parent or not parent.get("varied"):
        return {}
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    values = {}
    for item in HydraConfig.get().overrides.task:
        key, sep, value = str(item).partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    return {k: values[k.lstrip("+~")] for k in parent["varied"] if k.lstrip("+~") in values}


def config_yaml(cfg: Any) -> str:
    """The typed run config as the YAML text of ``config.yaml`` (the resolved config, keys in schema order)."""
    return yaml.dump(plain(cfg), default_flow_style=False, allow_unicode=True, sort_keys=False)


def job_tags(
    cfg: RunConfig, tags: Mapping[str, str], sweep_dir: str | Path | None = None
) -> tuple[str, dict[str, str]]:
    """(tracking URI, every tag) of a job's run: ours, where its process lives and, in a sweep, the
    parent link. Known before the run opens, so ``run.json`` can hold them for a later sync."""
    parent = sweep_parent(sweep_dir)
    uri = parent["tracking_uri"] if parent else cfg.tracking.uri
    all_tags = {"git_commit": git_commit(), "results_version": RESULTS_VERSION, **process_tags(), **tags}
    if parent:
        all_tags.update({"mlflow.parentRunId": parent["run_id"], "sweep_id": parent["sweep_id"], **hydra_job_tags()})
    elif (offline := offline_sweep(sweep_dir)) is not None:  # the parent is made by steering-merge
        all_tags.update({"sweep_id": offline["sweep_id"], **hydra_job_tags()})
    return str(uri), all_tags


def run_params(cfg: Any) -> dict[str, str]:
    """A run's params: the resolved config flattened, each value cut to MLflow's limit."""
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(plain(cfg)).items()}


@contextlib.contextmanager
def job_run(
    cfg: RunConfig,
    run_name: str,
    tags: Mapping[str, str],
    sweep_dir: str | Path | None = None,
    config_text: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start one MLflow run for a job: params flattened from the resolved config, tags, config artifact.

    Opened only to record finished results (``steering.tracking.recorder``), so a job that fails
    while it computes leaves no run behind. In a sweep the run is nested under the sweep's parent
    run. An exception marks the run FAILED and what was logged before it stays. ``config_text``:
    :func:`config_yaml` of ``cfg`` when the caller already rendered it.
    """
    uri, all_tags = job_tags(cfg, tags, sweep_dir)
    artifacts = artifact_root(uri) if cfg.tracking.offline else None
    configure(uri, cfg.tracking.experiment, cfg.cache.dir, artifacts)
    with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
        mlflow.log_params(run_params(cfg))
        mlflow.log_text(config_text if config_text is not None else config_yaml(cfg), "config.yaml")
        try:
            yield run
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run was killed, not failed
            with contextlib.suppress(Exception):
                mlflow.end_run("KILLED")
            raise


def process_tags() -> dict[str, str]:
    """Where a run's process lives, so ``resume=true`` can tell a dead RUNNING run from a live one."""
    return {"process_id": str(os.getpid()), "process_host": socket.gethostname()}
