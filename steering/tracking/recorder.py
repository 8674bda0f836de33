"""Recording a computed run: result files on disk first, then the checks, then MLflow; and resume.

The job's MLflow run opens only here, once the results exist: a job that fails before (signals,
compute, a bad input) leaves the store untouched. Results that fail the checks (non-finite or
implausible predictions, see ``steering.stats.run_metrics.implausible_predictions``) stay on disk,
marked ``rejected`` in ``run.json``, and never reach MLflow. A logging failure (the store or server
gone, a full disk) leaves the results on disk, remembered as pending under ``cache.dir`` so that
``resume=true`` (or ``python -m steering.results DIR``) logs them without recomputing. With
``resume=true`` a configuration that already has a FINISHED run (same config hash) is not run
again: :func:`previous_result` reads its metrics and tables back.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd

from steering.assets.validation import check_finite_results, prediction_columns
from steering.errors import ResultError
from steering.evaluation import RunResult, cache_dir
from steering.signals import SignalSet, save_signals
from steering.stats.run_metrics import implausible_predictions
from steering.tracking.results import (
    artifact_files,
    logging_failed,
    mark_logged,
    mark_rejected,
    note_run_id,
    record_pending,
    write_results,
)
from steering.tracking.runs import config_yaml, existing_experiment, find_finished, job_run, job_tags, run_params
from steering.util.files import atomic_path

if TYPE_CHECKING:
    from steering.config.schema import RunConfig

log = logging.getLogger(__name__)
TABLE_FILES = ("predictions.csv", "per_category.csv")


def record(
    cfg: RunConfig,
    result: RunResult,
    signals: SignalSet,
    digest: str,
    results_dir: str | Path | None,
    *,
    name: str,
    tags: Mapping[str, str],
    sweep_dir: str | Path | None = None,
    config_text: str | None = None,
    log_inputs: Callable[[], None] | None = None,
) -> Path:
    """Results to ``results_dir`` (else a temporary folder), the checks, then one MLflow run.

    The run (``tags``, nested in the sweep of ``sweep_dir``) opens only now; ``log_inputs`` logs the
    job's dataset inputs into it. ``config_text``: :func:`config_yaml` of ``cfg`` when the caller
    already rendered it. Sets ``result.run_id`` and ``result.experiment_id``. A logging failure
    records the directory as pending and raises the one-line error naming it.
    """
    text = config_text if config_text is not None else config_yaml(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(results_dir or tmp)
        on_disk = directory != Path(tmp)
        signals_file = save_signals(signals, Path(tmp) / f"signals_{signals.binning_name}.json")
        uri, all_tags = job_tags(cfg, tags, sweep_dir)
        info = {
            "run_id": None,
            "run_name": name,
            "experiment": str(cfg.tracking.experiment),
            "tracking_uri": uri,
            "tags": all_tags,
            "params": run_params(cfg),
            "config_hash": digest,
        }
        tables = {"predictions.csv": result.predictions, "per_category.csv": result.per_category}
        signals_text = {signals_file.name: signals_file.read_text()}
        write_results(directory, result.metrics, tables, text, info, signals_text, result.documents)
        for file_name, arrays in result.arrays.items():  # e.g. the random control's draws
            with atomic_path(directory / file_name) as part, open(part, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        _check_results(result, directory if on_disk else None)
        try:
            with job_run(cfg, name, tags, sweep_dir, text) as run:
                if on_disk:  # a sync after a failure below logs into this run, not a new one
                    note_run_id(directory, run.info.run_id)
                if log_inputs is not None:
                    log_inputs()
                mlflow.log_metrics(dict(result.metrics))
                for path in artifact_files(directory):
                    mlflow.log_artifact(str(path))
        except Exception as exc:
            if not on_disk:
                raise
            record_pending(cache_dir(cfg), digest, directory)
            raise logging_failed(uri, directory, exc) from exc
        result.run_id, result.experiment_id = run.info.run_id, run.info.experiment_id
        if on_disk:
            mark_logged(directory, run.info.run_id)
    return directory


def _check_results(result: RunResult, directory: Path | None) -> None:
    """Non-finite or implausible predictions fail the run; its files stay, marked ``rejected``."""
    try:
        check_finite_results(result.metrics, result.predictions, prediction_columns(result.predictions))
        problem = implausible_predictions(result.predictions)
        if problem:
            raise ResultError(problem)
    except ResultError as exc:
        if directory is not None:
            mark_rejected(directory, str(exc))
            raise ResultError(f"{exc}; the rejected results are in {directory}") from None
        raise


def previous_result(uri: str, experiment: str, digest: str, name: str) -> RunResult | None:
    """With ``resume=true``: the result of a FINISHED run that computed exactly this, if any."""
    experiment_id = existing_experiment(uri, experiment)
    previous = find_finished(experiment_id, digest) if experiment_id is not None else None
    if previous is None:
        return None
    log.info("resume: %s already finished as run %s; not run again", name, previous.info.run_id)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        tables = [pd.read_csv(client.download_artifacts(previous.info.run_id, t, tmp)) for t in TABLE_FILES]
    return RunResult(
        metrics=dict(previous.data.metrics),
        predictions=tables[0],
        per_category=tables[1],
        run_id=previous.info.run_id,
        experiment_id=experiment_id,
        tags=dict(previous.data.tags),
    )


def log_tables(result: RunResult) -> None:
    """predictions.csv and per_category.csv of ``result`` as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in zip(TABLE_FILES, (result.predictions, result.per_category), strict=True):
            frame.to_csv(Path(tmp) / name, index=False)
            mlflow.log_artifact(str(Path(tmp) / name))
