"""Recording a computed run: result files on disk first, then the finite check, then MLflow; and resume.

A logging failure leaves the results on disk, remembered as pending under ``cache.dir`` so that
``resume=true`` (or ``python -m steering.results DIR``) logs them without recomputing. With
``resume=true`` a configuration that already has a FINISHED run (same config hash) is not run
again: :func:`previous_result` reads its metrics and tables back.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd

from steering.assets.validation import check_finite_results, prediction_columns
from steering.evaluation import RunResult, cache_dir
from steering.signals import SignalSet, save_signals
from steering.tracking.results import artifact_files, logging_failed, mark_logged, record_pending, write_results
from steering.tracking.runs import config_yaml, existing_experiment, find_finished
from steering.util.files import atomic_path

if TYPE_CHECKING:
    from steering.config.schema import RunConfig

log = logging.getLogger(__name__)
TABLE_FILES = ("predictions.csv", "per_category.csv")


def record(
    cfg: RunConfig,
    result: RunResult,
    signals: SignalSet,
    run: mlflow.ActiveRun,
    digest: str,
    results_dir: str | Path | None,
    config_text: str | None = None,
) -> Path:
    """Results to ``results_dir`` (else a temporary folder), the finite check, then MLflow.

    ``config_text``: :func:`config_yaml` of ``cfg`` when the caller already rendered it.

    A logging failure records the directory as pending and raises the one-line error naming it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(results_dir or tmp)
        signals_file = save_signals(signals, Path(tmp) / f"signals_{signals.binning_name}.json")
        uri = mlflow.get_tracking_uri()
        write_results(
            directory,
            result.metrics,
            {"predictions.csv": result.predictions, "per_category.csv": result.per_category},
            config_text if config_text is not None else config_yaml(cfg),
            _run_info(run, str(cfg.tracking.experiment), uri, digest),
            {signals_file.name: signals_file.read_text()},
        )
        for name, arrays in result.arrays.items():  # e.g. the random control's draws
            with atomic_path(directory / name) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        check_finite_results(result.metrics, result.predictions, prediction_columns(result.predictions))
        try:
            mlflow.log_metrics(dict(result.metrics))
            for path in artifact_files(directory):
                mlflow.log_artifact(str(path))
        except Exception as exc:
            if directory == Path(tmp):
                raise
            record_pending(cache_dir(cfg), digest, directory)
            raise logging_failed(uri, directory, exc) from exc
        if directory != Path(tmp):
            mark_logged(directory, run.info.run_id)
    return directory


def _run_info(run: mlflow.ActiveRun, experiment: str, uri: str, digest: str) -> dict:
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": experiment,
        "tracking_uri": uri,
        "tags": dict(run.data.tags),
        "config_hash": digest,
    }


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
