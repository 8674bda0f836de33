"""Content and configuration hashes: every cache key, file checksum and config digest of the project.

Pure functions (no I/O except reading the file being hashed), so a key means the same thing
wherever it is computed. All are SHA-256, hex, truncated where a short key suffices.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Config keys that say where or how fast a run happens, not what it computes (``confirm`` acts after the sweep).
VOLATILE_KEYS = ("tracking", "cache", "demo.cache_dir", "demo.workers", "demo.progress", "resume", "threads", "device")
VOLATILE_KEYS += ("confirm",)
#: Keys the run config gained after runs were recorded with it (another backbone; the demo's sections
#: became the apps' own dataclasses): at these values they are left out of the hash, so a run logged
#: before the key existed keeps its hash and ``resume=true`` still finds it. Set otherwise, they count.
ADDED_DEFAULTS: dict[str, Any] = {
    "model.arch.backbone": "cnn6",
    "demo.frontend.resampler": "auto",
    "demo.synthetic.name_prefix": "synth",
    "demo.train.cosine_schedule": True,
    "demo.train.device": "cpu",
    "demo.train.eval_batch_size": 128,
    "demo.train.progress": True,
    "demo.train.target_weights": [1.0, 1.0],
    "demo.train.train_fraction": 0.7,
    "demo.train.weight_decay": 0.0,
    # how the signals are made (docs/signals.md); at these values: the category means, as before
    "signals.method": "mean",
    "signals.k": 10,
    "signals.labels": "observed",
    "signals.optimize.steps": 200,
    "signals.optimize.step_sizes": [0.01, 0.03, 0.1],
    "signals.optimize.patience": 20,
    "signals.optimize.holdout": 0.2,
}
_ABSENT = object()


def bytes_digest(data: bytes, length: int | None = None) -> str:
    """SHA-256 of ``data`` (hex, truncated to ``length`` characters when given)."""
    return hashlib.sha256(data).hexdigest()[:length]


def parts_digest(parts: Iterable[bytes | str], length: int | None = None) -> str:
    """SHA-256 of the concatenated ``parts`` (str as UTF-8), without joining them in memory first."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:length]


def json_digest(obj: Any, length: int | None = None) -> str:
    """SHA-256 of ``obj`` as sorted-key JSON (non-JSON values as ``str``): the form of every cache key."""
    return bytes_digest(json.dumps(obj, sort_keys=True, default=str).encode(), length)


def indices_digest(indices: Any, length: int = 16) -> str:
    """Content hash of an index array (order kept): what a cache keyed on "these clips" must use."""
    return bytes_digest(np.ascontiguousarray(indices, dtype=np.int64).tobytes(), length)


def file_digest(path: str | Path, length: int | None = None) -> str:
    """SHA-256 of a file's bytes; remembered per process while the file is unchanged (same size and
    mtime), so the jobs of a sweep do not re-read a large feature file each."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)[:length]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def plain(value: Any) -> Any:
    """A typed config (dataclass instance) or a mapping as nested plain containers, values untouched,
    so both hash, log and save alike."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def config_hash(config: Mapping[str, Any] | Any, *content_hashes: str, exclude: tuple[str, ...] = ()) -> str:
    """Hash of what a run computes: the resolved config without volatile keys, plus input file hashes.

    ``config`` is a plain (resolved) mapping or a dataclass; ``exclude`` leaves out further keys
    (and their children), e.g. ``strength`` for sibling reuse.
    """
    resolved = flatten(plain(config))
    dropped = (*VOLATILE_KEYS, *exclude)
    kept = {
        k: v
        for k, v in resolved.items()
        if not any(k == d or k.startswith(d + ".") for d in dropped) and ADDED_DEFAULTS.get(k, _ABSENT) != v
    }
    return json_digest([kept, list(content_hashes)], 20)
