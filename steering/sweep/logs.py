"""Terminal logging: one format for MLflow's loggers and ours, log lines that do not break progress bars.

:class:`ProgressLogging` is a Hydra callback that hands MLflow's loggers to the root logger
(:mod:`steering.tracking.mlflow_logs`) for every job and keeps ``logging_redirect_tqdm`` active
while the job runs, so log lines are written above the progress bars instead of through them.
In a sweep over worker processes (joblib, Submitit) it also ends each worker with the sweep and
prints each job's end as it comes (:mod:`steering.sweep.workers`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from steering.sweep import overrides, workers
from steering.tracking.mlflow_logs import route_mlflow_logging


def progress_safe_logging() -> contextlib.AbstractContextManager:
    """``logging_redirect_tqdm`` over the root logger: console log lines go through ``tqdm.write``."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    route_mlflow_logging()
    return logging_redirect_tqdm(loggers=[logging.getLogger()])


class ProgressLogging(Callback):
    """Hydra callback (every app's ``hydra.callbacks``): MLflow logs through Hydra's, bars kept intact."""

    def __init__(self) -> None:
        self._active: contextlib.ExitStack | None = None
        self._started = 0.0
        self._progress: workers.JobProgress | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        route_mlflow_logging()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        route_mlflow_logging()
        workers.mark_sweep_process()
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if launcher and not launcher.endswith("BasicLauncher"):  # jobs in other processes: say as they end
            task, params = overrides.task_and_params(config)
            planned = overrides.planned_jobs(task, params)
            varied = overrides.varied_keys(task, params)
            self._progress = workers.JobProgress(config.hydra.sweep.dir, planned, varied).start()
            atexit.register(self._progress.stop)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        workers.die_with_sweep()
        self._started = time.monotonic()
        self._active = contextlib.ExitStack()
        self._active.enter_context(progress_safe_logging())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
        if workers.sweep_pid() is not None:  # a worker process: the sweep's process reports this job
            error = getattr(job_return, "_return_value", None) if job_return.status.name == "FAILED" else None
            with contextlib.suppress(OSError):
                workers.record_job_end(
                    config.hydra.sweep.dir,
                    int(config.hydra.job.num),
                    job_return.status.name,
                    time.monotonic() - self._started,
                    list(config.hydra.overrides.task),
                    f"{type(error).__name__}: {error}" if error is not None else "",
                )

    def __getstate__(self) -> dict[str, Any]:  # pickled to joblib/submitit workers without the live context
        return {"_active": None, "_started": 0.0, "_progress": None}
