"""Which checkpoint and feature file an app works on: the user's, or the embedded demo's.

``model.checkpoint`` and ``data.path`` name the user's files; a null one is replaced by the
embedded demo's (``steering.demo``), built on first use and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steering.util.hashing import plain


def _get(section: Any, key: str) -> Any:
    """``section.key`` of a typed config section, or ``section[key]`` of a mapping (None if absent)."""
    return section.get(key) if isinstance(section, Mapping) else getattr(section, key, None)


def _mapping(section: Any) -> Mapping:
    """A config section as the mapping the demo builder reads (a mapping is passed on unresolved)."""
    return section if isinstance(section, Mapping) else plain(section)


def resolve_inputs(cfg: Any) -> tuple[Path, Path]:
    """(checkpoint, feature file) of a config with ``model``, ``data`` and ``demo`` sections."""
    model = _get(cfg, "model")
    checkpoint, features = _get(model, "checkpoint"), _get(_get(cfg, "data"), "path")
    if checkpoint is None or features is None:
        from steering.demo import ensure_demo

        demo = ensure_demo(_mapping(_get(cfg, "demo")), _mapping(_get(model, "arch")))
        checkpoint = checkpoint or demo.checkpoint
        features = features or demo.features
    return Path(checkpoint), Path(features)


def resolve_features(cfg: Any) -> Path:
    """The feature file for ``steering.train``: ``data.path``, or the demo's synthetic features."""
    path = _get(_get(cfg, "data"), "path")
    if path:
        return Path(path)
    from steering.demo import demo_features

    return demo_features(_mapping(_get(cfg, "demo")))
