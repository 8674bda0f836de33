"""Terminal logging: one format for MLflow's loggers and ours, log lines that do not break progress bars.

MLflow gives its loggers (``mlflow``, ``alembic``, ...) their own handler and format when it is imported;
:func:`route_mlflow_logging` hands them back to the root logger, i.e. to Hydra's handlers (console and the
job's log file). :class:`ProgressLogging` is a Hydra callback that does this for every job and keeps
``tqdm.contrib.logging.logging_redirect_tqdm`` active while the job runs, so log lines are written above
the progress bars instead of through them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: The loggers MLflow configures on import (mlflow.utils.logging_utils._configure_mlflow_loggers).
MLFLOW_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")


def route_mlflow_logging() -> None:
    """Remove MLflow's own handlers from its loggers and let them propagate to the root (keeping levels)."""
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


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
