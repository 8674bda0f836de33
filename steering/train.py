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

from steering.config import config_dir
from steering.inputs import resolve_features

if TYPE_CHECKING:
    from steering.training import TrainResult

log = logging.getLogger(__name__)


def run(cfg: Mapping) -> TrainResult:
    """Train with ``cfg`` (a resolved plain mapping) and log to MLflow."""
    import mlflow

    from steering.tracking import configure, flatten
    from steering.training import train_model

    features = resolve_features(cfg)
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
def main(cfg: DictConfig) -> None:
    run(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
