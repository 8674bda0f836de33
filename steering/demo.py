"""``python -m steering.demo``: build (or reuse) the embedded demo's assets and print where they are."""

from __future__ import annotations

import logging

from steering.cli import hydra_app, run_app
from steering.config.schema import TrainAppConfig

log = logging.getLogger(__name__)


@hydra_app("train")
def main(config: TrainAppConfig) -> None:
    from steering.assets.demo import ensure_demo  # torch loads after composition

    assets = ensure_demo(config.demo, config.model.arch)
    info = assets.info
    log.info("features   %s", assets.features)
    log.info("checkpoint %s", assets.checkpoint)
    log.info(
        "test r: valence %.3f, arousal %.3f; mean |pass2 - pass1|: valence %.3f, arousal %.3f",
        info["test_r_valence"],
        info["test_r_arousal"],
        info["test_feedback_effect_valence"],
        info["test_feedback_effect_arousal"],
    )


if __name__ == "__main__":
    run_app(main)
