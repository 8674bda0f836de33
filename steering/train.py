"""``python -m steering.train``: train the LRM model on a feature file, curves to MLflow.

With ``data.path=null`` it trains on the embedded synthetic demo features (built or reused).
"""

from __future__ import annotations

from steering.cli import hydra_app, run_app
from steering.config.schema import TrainAppConfig
from steering.tracking.preflight import tracking_environment


@hydra_app("train")
def main(config: TrainAppConfig) -> None:
    from steering.tracking.training import train_logged  # torch and MLflow load after composition

    train_logged(config)


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    tracking_environment()  # before MLflow is imported: it decides on telemetry at import
    run_app(main)


if __name__ == "__main__":
    cli()
