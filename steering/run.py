"""``python -m steering.run``: one steering configuration, logged as one MLflow run."""

from __future__ import annotations

import logging

from steering.cli import hydra_app, run_app, sweep_dir
from steering.config.schema import RunConfig
from steering.tracking.preflight import tracking_environment

log = logging.getLogger("steering.run")


@hydra_app("run")
def main(config: RunConfig) -> float:
    from steering.sweep.context import sweep_reuse  # torch and MLflow load after composition
    from steering.tracking.job import evaluate, summary

    sweep = sweep_dir()
    result = evaluate(config, sweep_dir=sweep, reuse=sweep_reuse(sweep))
    log.info("%s", summary(config, result, sweep))  # terminal and the job's log file
    # The return value lets optimisation sweepers (e.g. Optuna) maximise the valence gain.
    return float(result.metrics["dr_valence"])


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    tracking_environment()  # before MLflow is imported: it decides on telemetry at import
    run_app(main)


if __name__ == "__main__":
    cli()
