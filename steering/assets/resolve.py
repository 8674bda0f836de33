"""Which checkpoint and feature file an app works on: the user's, or the embedded demo's.

``model.checkpoint`` and ``data.path`` name the user's files; a null one is replaced by the
embedded demo's (``steering.demo``), built on first use and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def resolve_inputs(cfg: Mapping) -> tuple[Path, Path]:
    """(checkpoint, feature file) for ``steering.run`` and ``steering.signals``."""
    checkpoint, features = cfg["model"].get("checkpoint"), cfg["data"].get("path")
    if checkpoint is None or features is None:
        from steering.demo import ensure_demo

        demo = ensure_demo(cfg["demo"], cfg["model"]["arch"])
        checkpoint = checkpoint or demo.checkpoint
        features = features or demo.features
    return Path(checkpoint), Path(features)


def resolve_features(cfg: Mapping) -> Path:
    """The feature file for ``steering.train``: ``data.path``, or the demo's synthetic features."""
    if cfg["data"].get("path"):
        return Path(cfg["data"]["path"])
    from steering.demo import demo_features

    return demo_features(cfg["demo"])
