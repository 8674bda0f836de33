"""``python -m steering.run``: one steering configuration, logged as one MLflow run."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from steering.config import config_dir

log = logging.getLogger("steering.run")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="run")
def main(cfg: DictConfig) -> float:
    from steering.runner import evaluate, summary  # torch and MLflow load after composition

    hydra_cfg = HydraConfig.get()
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    result = evaluate(cfg, sweep_dir=sweep_dir)
    log.info("%s", summary(cfg, result, sweep_dir))  # terminal and the job's log file
    # The return value lets optimisation sweepers (e.g. Optuna) maximise the valence gain.
    return float(result.metrics["dr_valence"])


if __name__ == "__main__":
    main()
