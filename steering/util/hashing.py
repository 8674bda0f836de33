"""Configuration hashes, pure: no MLflow, no Hydra, so the engine can key its caches with them.

A run's config hash (tag ``config_hash``) is what ``resume=true`` looks runs up by, so its digest
must not change for the same configuration: the typed config is flattened to dotted keys exactly as
the resolved YAML config is, the volatile keys are dropped and the rest is hashed with the input
files' content hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: Keys that say where or how fast a run happens, not what it computes (``confirm`` acts after the sweep).
VOLATILE_KEYS = (
    "tracking",
    "cache",
    "demo.cache_dir",
    "demo.workers",
    "demo.progress",
    "resume",
    "threads",
    "device",
    "confirm",
)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def plain(config: Any) -> dict[str, Any]:
    """A typed config (dataclass instance) or a mapping as nested plain dicts."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def config_hash(config: Any, *content_hashes: str, exclude: tuple[str, ...] = ()) -> str:
    """Hash of what a run computes: the config without volatile keys, plus input file hashes.

    ``config``: the typed run config (or its plain nested dict). ``exclude`` leaves out further
    keys (and their children), e.g. ``strength`` for sibling reuse.
    """
    dropped = (*VOLATILE_KEYS, *exclude)
    flat = flatten(plain(config))
    kept = {k: v for k, v in flat.items() if not any(k == d or k.startswith(d + ".") for d in dropped)}
    payload = json.dumps([kept, list(content_hashes)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def parts_hash(*parts: str, length: int = 20) -> str:
    """Hash of a sequence of strings (e.g. a key and the content hashes it is combined with)."""
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:length]
