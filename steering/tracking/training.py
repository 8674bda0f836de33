"""Training logged to MLflow: the inputs checked first, the curves per epoch, the checkpoint optionally."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict
from pathlib import Path

import mlflow

from steering.assets.resolve import resolve_features
from steering.assets.validation import check_train_features, check_train_options
from steering.config.schema import TrainAppConfig
from steering.tracking.preflight import check_tracking
from steering.tracking.runs import configure, flatten
from steering.training.finetune import initial_model
from steering.training.loop import TrainResult, train_model

log = logging.getLogger(__name__)


def train_logged(config: TrainAppConfig) -> TrainResult:
    """Train as ``config`` says, into ``tracking.train_experiment`` (default ``<experiment>-train``)."""
    plain = asdict(config)
    check_train_options(plain)
    check_tracking(config.tracking.uri)
    features = resolve_features(config)
    initial = initial_model(config.model.checkpoint, config.checkpoint, config.model.trust_pickle)
    check_train_features(plain, features, initial.config.mel_bins if initial else config.model.arch.mel_bins)
    checkpoint = Path(config.checkpoint)
    configure(config.tracking.uri, config.tracking.train_experiment or f"{config.tracking.experiment}-train")
    with mlflow.start_run(run_name=config.run_name):
        try:
            params = flatten({"model": plain["model"]["arch"], "train": plain["train"], "features": str(features)})
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.set_tag("features", str(features))
            if initial is not None:
                mlflow.set_tag("fine_tuned_from", str(config.model.checkpoint))
            result = train_model(features, config.model.arch, config.train, checkpoint, mlflow.log_metrics, initial)
            mlflow.log_metrics({"best_val_pearson": result.best_val_pearson, "best_epoch": result.best_epoch})
            if config.log_checkpoint:
                mlflow.log_artifact(str(checkpoint))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (steering.cli): the run was killed, not failed
            with contextlib.suppress(Exception):
                mlflow.end_run("KILLED")
            raise
    log.info("best val r %.3f (epoch %d); checkpoint %s", result.best_val_pearson, result.best_epoch, checkpoint)
    return result
