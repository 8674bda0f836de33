"""MLflow's log messages in our format: its loggers hand their records to the root logger.

MLflow gives its loggers (``mlflow``, ``alembic``, ...) their own handler and format when it is
imported; :func:`route_mlflow_logging` hands them back to the root logger, i.e. to Hydra's handlers
(console and the job's log file).
"""

from __future__ import annotations

import logging

#: The loggers MLflow configures on import (mlflow.utils.logging_utils._configure_mlflow_loggers).
MLFLOW_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")


def route_mlflow_logging() -> None:
    """Remove MLflow's own handlers from its loggers and let them propagate to the root (keeping levels)."""
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
