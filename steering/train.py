"""``python -m steering.train``: train the LRM model on a feature file, curves to MLflow.

With ``data.path=null`` it trains on the embedded synthetic demo features (built or reused).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from steering.assets.resolve import resolve_features
from steering.config import config_dir
from steering.errors import one_line_errors

if TYPE_CHECKING:
    from steering.model.training import TrainResult

log = logging.getLogger(__name__)


def run(cfg: Mapping) -> TrainResult:
    """Train with ``cfg`` (a resolved plain mapping) and log to MLflow; inputs are checked first."""
    import mlflow

    from steering.assets.validation import check_train_features, check_train_options
    from steering.model.training import train_model
    from steering.tracking.preflight import check_tracking
    from steering.tracking.runs import configure, flatten

    check_train_options(cfg)
    check_tracking(cfg["tracking"]["uri"])
    features = resolve_features(cfg)
    check_train_features(cfg, features, int(cfg["model"]["arch"].get("mel_bins", 64)))
    train_cfg = dict(cfg["train"])
    train_cfg.setdefault("split", cfg["data"].get("split", "threeway"))
    train_cfg.setdefault("train_fraction", cfg["data"].get("train_fraction", 0.7))
    checkpoint = Path(cfg["checkpoint"])
    configure(
        cfg["tracking"]["uri"], cfg["tracking"].get("train_experiment") or f"{cfg['tracking']['experiment']}-train"
    )
    with mlflow.start_run(run_name=cfg.get("run_name")):
        params = flatten({"model": cfg["model"]["arch"], "train": train_cfg, "features": str(features)})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.set_tag("features", str(features))
        result = train_model(features, cfg["model"]["arch"], train_cfg, checkpoint, log_metrics=mlflow.log_metrics)
        mlflow.log_metrics({"best_val_pearson": result.best_val_pearson, "best_epoch": result.best_epoch})
        if cfg.get("log_checkpoint", False):
            mlflow.log_artifact(str(checkpoint))
    log.info("best val r %.3f (epoch %d); checkpoint %s", result.best_val_pearson, result.best_epoch, checkpoint)
    return result


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(OmegaConf.to_container(cfg, resolve=True))


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    from steering.errors import run_app
    from steering.tracking.preflight import tracking_environment

    tracking_environment()  # before MLflow is imported: it decides on telemetry at import
    run_app(main)


if __name__ == "__main__":
    cli()
