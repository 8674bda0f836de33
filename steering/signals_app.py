"""``python -m steering.signals``: extract steering signals from a model and a feature file.

    python -m steering.signals binning=25bin split=train output=signals_25bin.json \\
        model.checkpoint=model.pth data.path=features.h5
"""

from __future__ import annotations

import logging

from steering.cli import hydra_app, run_app
from steering.config.schema import SignalsAppConfig

log = logging.getLogger("steering.signals")


@hydra_app("signals")
def main(config: SignalsAppConfig) -> None:
    from steering.assets.extraction import extract_to_file  # torch loads after composition

    log.debug("config: %s", config)
    extract_to_file(config)


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    run_app(main)


if __name__ == "__main__":
    cli()
