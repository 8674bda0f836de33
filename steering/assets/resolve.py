"""Which checkpoint and feature file an app works on: the user's, or the embedded demo's.

``model.checkpoint`` and ``data.path`` name the user's files; a null one is replaced by the
embedded demo's (``steering.assets.demo``), built on first use and cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steering.config.schema import RunConfig, SignalsAppConfig, TrainAppConfig


def resolve_inputs(config: RunConfig | SignalsAppConfig) -> tuple[Path, Path]:
    """(checkpoint, feature file) for ``steering.run`` and ``steering.signals``."""
    checkpoint, features = config.model.checkpoint, config.data.path
    if checkpoint is None or features is None:
        from steering.assets.demo import ensure_demo

        demo = ensure_demo(config.demo, config.model.arch)
        checkpoint = checkpoint or demo.checkpoint
        features = features or demo.features
    return Path(checkpoint), Path(features)


def resolve_features(config: TrainAppConfig) -> Path:
    """The feature file for ``steering.train``: ``data.path``, or the demo's synthetic features."""
    if config.data.path:
        return Path(config.data.path)
    from steering.assets.demo import demo_features

    return demo_features(config.demo)
