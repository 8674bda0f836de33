"""Signal files in the users' JSON layout (docs/formats.md, "Signal file").

Each category name maps to ``{"valence_128d": [...], "arousal_128d": [...], "samples_count": n, ...}``;
the non-category keys ``metadata`` (provenance, diagnostics) and ``generation_config`` sit beside them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from steering.data.binning import Binning, BinningError
from steering.errors import SteeringError
from steering.signals.signalset import PATHWAYS, SIGNAL_DIM, SignalSet
from steering.util.files import atomic_path

log = logging.getLogger(__name__)

NON_CATEGORY_KEYS = ("metadata", "generation_config")
VECTOR_KEYS = {p: f"{p}_128d" for p in PATHWAYS}
COUNT_KEY = "samples_count"
#: A signal file holds a few hundred numbers per category and its provenance: megabytes, not gigabytes.
MAX_FILE_BYTES = 256 << 20
#: Nesting a signal file never needs (metadata and generation_config are a few levels deep).
MAX_DEPTH = 64


class SignalFileError(SteeringError, ValueError):
    """A signal file that is missing or malformed."""


def _vector(path: Path, category: str, key: str, value: Any) -> np.ndarray:
    try:
        vec = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SignalFileError(f"{path}: {category}.{key} is not a list of numbers") from None
    if vec.shape != (SIGNAL_DIM,):
        raise SignalFileError(f"{path}: {category}.{key} must hold {SIGNAL_DIM} numbers, got shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise SignalFileError(f"{path}: {category}.{key} has NaN/inf values")
    return vec


def _binning_name(meta: dict[str, Any], binning: Binning | None) -> str:
    if binning is not None:
        return binning.name
    b = meta.get("binning")
    if isinstance(b, dict):
        return str(b.get("name", "custom"))
    return str(b) if b else "custom"


def load_signals(path: str | Path, binning: Binning | None = None) -> SignalSet:
    """Read a signal file as it is (no ``min_samples`` filtering).

    With ``binning``, category names are canonicalised through its aliases (``neutral_middle`` ->
    ``neutral_moderate``) and unknown names are an error; without, names are kept as written.
    """
    path = Path(path)
    raw = _read_json(path)

    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    _check_metadata(path, meta)
    gen = raw.get("generation_config") if isinstance(raw.get("generation_config"), dict) else {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, int] = {}
    extras: dict[str, dict[str, Any]] = {}
    for key, entry in raw.items():
        if key in NON_CATEGORY_KEYS or not isinstance(entry, dict):
            continue
        has_vectors = any(k in entry for k in VECTOR_KEYS.values())
        if binning is not None:
            try:
                name = binning.canonical(key)
            except BinningError as exc:
                if not has_vectors:
                    log.debug("%s: skipping non-category key %r", path, key)
                    continue
                raise SignalFileError(f"{path}: {exc}") from None
        elif has_vectors:
            name = key
        else:
            log.debug("%s: skipping non-category key %r", path, key)
            continue
        if name in vectors:
            raise SignalFileError(f"{path}: category {name!r} appears twice (as {key!r} and another spelling)")
        missing = [k for k in VECTOR_KEYS.values() if k not in entry]
        if missing:
            raise SignalFileError(f"{path}: category {key!r} is missing {', '.join(missing)}")
        vectors[name] = {p: _vector(path, key, k, entry[k]) for p, k in VECTOR_KEYS.items()}
        count = entry.get(COUNT_KEY, 0)
        if isinstance(count, bool) or not isinstance(count, int | float) or count < 0:
            raise SignalFileError(f"{path}: {key}.{COUNT_KEY} must be a non-negative integer, got {count!r}")
        counts[name] = int(count)
        extra = {k: v for k, v in entry.items() if k not in VECTOR_KEYS.values() and k != COUNT_KEY}
        if extra:
            extras[name] = extra
    if not vectors:
        raise SignalFileError(f"{path}: no category signals found (keys: {sorted(raw)[:10]})")
    if binning is not None:  # the scheme's order, whatever the file's
        order = {c: i for i, c in enumerate(binning.categories)}
        vectors = dict(sorted(vectors.items(), key=lambda kv: order[kv[0]]))
    log.info("loaded %d signals from %s", len(vectors), path)
    return SignalSet(
        binning_name=_binning_name(meta, binning),
        vectors=vectors,
        counts=counts,
        metadata=dict(meta),
        source_path=path,
        generation_config=dict(gen),
        extras=extras,
    )


def other_checkpoint(signals: SignalSet, model_hash: str, checkpoint: str | Path | None = None) -> str | None:
    """How the signals' recorded checkpoint differs from the loaded one, or None when it does not (or is
    not recorded).

    The recorded ``metadata.checkpoint_hash`` decides where there is one (compared on the common
    prefix: some records keep the full digest, others 16 characters); a file that only records
    ``checkpoint_path`` is compared by file name (the folder differs from machine to machine). Signals
    of another model steer with vectors from another activation space: allowed, but the run is warned
    about and tagged.
    """
    meta = signals.metadata or {}
    recorded = str(meta.get("checkpoint_hash") or "")
    if recorded:
        if recorded.startswith(model_hash) or model_hash.startswith(recorded):
            return None
        return f"checkpoint hash {recorded[:16]}, this model {model_hash[:16]}"
    path = meta.get("checkpoint_path") or meta.get("checkpoint")
    if not path or checkpoint is None or not isinstance(path, str):
        return None
    if Path(path).name == Path(checkpoint).name:
        return None
    return f"checkpoint {path}, this model {checkpoint}"


#: Provenance the framework reads back from a signal file, and the JSON type each must have.
_METADATA_TYPES = {
    "data_hash": str,
    "checkpoint_hash": str,
    "checkpoint_path": str,
    "split": str,
    "diagnostics": dict,
    "counts": dict,
}


def _check_metadata(path: Path, meta: dict[str, Any]) -> None:
    """The provenance keys later code reads have the types it expects (else a one-line error, not a crash)."""
    for key, kind in _METADATA_TYPES.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise SignalFileError(f"{path}: metadata.{key} must be a JSON {kind.__name__}, got {meta[key]!r:.60}")
    indices = meta.get("indices")
    if indices is None:
        return
    if not isinstance(indices, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 62 for i in indices
    ):
        raise SignalFileError(f"{path}: metadata.indices must be a list of clip indices (non-negative integers)")


def _read_json(path: Path) -> dict[str, Any]:
    """The file's top-level object, refused in one line when missing, too big, malformed or nested too deep."""
    if not path.is_file():
        raise SignalFileError(f"{path}: signal file not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SignalFileError(f"{path}: {size} bytes is too big for a signal file (at most {MAX_FILE_BYTES})")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SignalFileError(f"{path}: not a JSON file ({exc})") from None
    except RecursionError:
        raise SignalFileError(f"{path}: JSON nested too deeply to read (a signal file is a few levels deep)") from None
    except OSError as exc:
        raise SignalFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not isinstance(raw, dict):
        raise SignalFileError(f"{path}: expected a JSON object mapping category names to signals")
    if _depth(raw) > MAX_DEPTH:
        raise SignalFileError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep (a signal file is a few)")
    return raw


def _depth(value: Any) -> int:
    """Nesting depth of JSON data, without recursion (deep data would exhaust Python's stack later)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy to Python, non-finite floats to null, paths to strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def signals_to_json(signals: SignalSet) -> dict[str, Any]:
    """The users' layout: categories first, then ``metadata`` and ``generation_config``."""
    from steering.signals.diagnostics import signal_diagnostics

    out: dict[str, Any] = {}
    for cat in signals.categories:
        entry: dict[str, Any] = {k: signals.vectors[cat][p].astype(np.float64).tolist() for p, k in VECTOR_KEYS.items()}
        entry[COUNT_KEY] = int(signals.counts.get(cat, 0))
        entry.update(_jsonable(signals.extras.get(cat, {})))
        out[cat] = entry
    meta = dict(signals.metadata)
    meta.setdefault("binning", signals.binning_name)
    meta.setdefault("counts", {c: int(signals.counts.get(c, 0)) for c in signals.categories})
    meta["fingerprint"] = signals.fingerprint()
    diagnostics = dict(meta.get("diagnostics") or {})
    for key, value in signal_diagnostics(signals).items():
        diagnostics.setdefault(key, value)
    meta["diagnostics"] = diagnostics
    out["metadata"] = _jsonable(meta)
    out["generation_config"] = _jsonable(signals.generation_config)
    return out


def save_signals(signals: SignalSet, path: str | Path) -> Path:
    """Write ``signals`` in the users' layout, atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = signals_to_json(signals)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, allow_nan=False)
    log.info("saved %d signals to %s", len(signals), path)
    return path
