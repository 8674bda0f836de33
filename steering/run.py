"""``python -m steering.run``: one steering configuration, logged as one MLflow run."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from steering.config import config_dir
from steering.errors import one_line_errors

log = logging.getLogger("steering.run")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="run")
@one_line_errors
def main(cfg: DictConfig) -> float:
    from steering.runner import evaluate, summary  # torch and MLflow load after composition

    hydra_cfg = HydraConfig.get()
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    result = evaluate(cfg, sweep_dir=sweep_dir)
    print(summary(cfg, result), flush=True)
    # The return value lets optimisation sweepers (e.g. Optuna) maximise the valence gain.
    return float(result.metrics["dr_valence"])


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    from steering.errors import run_app

    run_app(main)


if __name__ == "__main__":
    cli()
