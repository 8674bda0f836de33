"""Terminal logging: MLflow's loggers through the root (Hydra's) handlers, log lines above progress bars."""

from __future__ import annotations

import io
import logging

from steering.sweep.logs import ProgressLogging
from steering.tracking.mlflow_logs import MLFLOW_LOGGERS, route_mlflow_logging


def test_mlflow_loggers_go_through_the_root_handlers(monkeypatch):
    import mlflow  # noqa: F401  (configures its own handler on import)

    logger = logging.getLogger("mlflow")
    monkeypatch.setattr(logger, "handlers", [logging.StreamHandler(io.StringIO())])
    monkeypatch.setattr(logger, "propagate", False)
    route_mlflow_logging()
    assert all(not logging.getLogger(n).handlers and logging.getLogger(n).propagate for n in MLFLOW_LOGGERS)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    logger.setLevel(logging.INFO)
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    assert stream.getvalue() == "[mlflow.store.db.utils][INFO] - Creating initial MLflow database tables...\n"


def test_progress_logging_callback_writes_console_logs_through_tqdm_during_a_job(monkeypatch):
    import pickle
    import sys

    from tqdm import tqdm

    console, logfile = logging.StreamHandler(sys.stdout), logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [console, logfile])
    monkeypatch.setattr(root, "level", logging.INFO)
    written = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, msg, file=None, **kw: written.append(msg)))
    callback = ProgressLogging()
    callback.on_job_start(config=None)
    logging.getLogger("steering.test").info("during the job")
    assert written == ["during the job"]  # the console line went through tqdm.write (bars stay intact)
    assert logfile.stream.getvalue() == "during the job\n"  # the log file gets it as is
    clone = pickle.loads(pickle.dumps(callback))  # joblib/submitit workers get the callback mid-job
    clone.on_job_end(config=None, job_return=None)  # ...without the live redirection: nothing to undo
    assert console not in root.handlers
    callback.on_job_end(config=None, job_return=None)
    assert root.handlers == [console, logfile]  # restored after the job
    logging.getLogger("steering.test").info("after the job")
    assert written == ["during the job"]
