"""Which checkpoint and feature file an app works on: the user's, or the embedded demo's.

``model.checkpoint`` and ``data.path`` name the user's files; a null one is replaced by the
embedded demo's (``steering.demo``), built on first use and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steering.util.hashing import plain


def _mapping(section: Any) -> Mapping:
    """A config section as the mapping the demo builder reads (a mapping is passed on unresolved)."""
    return section if isinstance(section, Mapping) else plain(section)


def resolve_inputs(cfg: Any) -> tuple[Path, Path]:
    """(checkpoint, feature file) of a typed config with ``model``, ``data`` and ``demo`` sections."""
    checkpoint, features = cfg.model.checkpoint, cfg.data.path
    if checkpoint is None or features is None:
        from steering.demo import ensure_demo

        demo = ensure_demo(_mapping(cfg.demo), _mapping(cfg.model.arch))
        checkpoint = checkpoint or demo.checkpoint
        features = features or demo.features
    return Path(checkpoint), Path(features)


def resolve_features(cfg: Any) -> Path:
    """The feature file for ``steering.train``: ``data.path``, or the demo's synthetic features."""
    if cfg.data.path:
        return Path(cfg.data.path)
    from steering.demo import demo_features

    return demo_features(_mapping(cfg.demo))
