"""Terminal logging: one format for MLflow's loggers and ours, log lines that do not break progress bars.

:class:`ProgressLogging` is a Hydra callback that hands MLflow's loggers to the root logger
(:mod:`steering.tracking.mlflow_logs`) for every job and keeps ``logging_redirect_tqdm`` active
while the job runs, so log lines are written above the progress bars instead of through them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

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

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        route_mlflow_logging()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        route_mlflow_logging()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._active = contextlib.ExitStack()
        self._active.enter_context(progress_safe_logging())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None

    def __getstate__(self) -> dict[str, Any]:  # pickled to joblib/submitit workers without the live context
        return {"_active": None}
