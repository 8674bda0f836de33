"""Signals cached on disk, keyed by what they are computed from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from steering.data.binning import Binning
from steering.data.splits import indices_hash
from steering.signals.io import SignalFileError, load_signals, save_signals
from steering.signals.recipe import SignalRecipe
from steering.signals.signalset import SignalSet
from steering.util.cache import record_checksum, verify_file
from steering.util.hashing import json_digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: keyed on the exact sample indices, not the split name


def cache_key(
    model_hash: str,
    data_hash: str,
    indices: Sequence[int] | np.ndarray,
    binning: Binning,
    recipe: SignalRecipe | None = None,
) -> str:
    """Content-hash key: checkpoint, data, the exact sample indices, the full binning scheme and the recipe.

    The indices are hashed as a set (sorted, unique: a mean does not depend on their order), so two
    splits with the same name but another ``train_fraction`` or scheme never share an entry. A
    ``recipe`` other than plain category means (``SignalRecipe.key``: method, labels, seed,
    hyper-parameters, steering configuration) joins the key; plain means keep the key they always had.
    """
    spec = {
        "format": CACHE_FORMAT,
        "model": model_hash,
        "data": data_hash,
        "indices": indices_hash(np.unique(np.asarray(indices, dtype=np.int64))),
        "binning": binning.to_dict(),
    }
    made = recipe.key() if recipe is not None else None
    if made is not None:
        spec["recipe"] = made
    return json_digest(spec, 16)


def cached_signals(
    model_hash: str,
    data_hash: str,
    indices: Sequence[int] | np.ndarray,
    binning: Binning,
    cache_dir: str | Path | None,
    build: Callable[[], SignalSet],
    recipe: SignalRecipe | None = None,
) -> SignalSet:
    """The cached signals for this key, else ``build()``'s, saved to the cache first.

    A cache file that does not match its checksum (steering.util.cache) or its recorded fingerprint,
    or cannot be read, is rebuilt (with a warning) rather than trusted. ``cache_dir=None``
    turns caching off: ``build()`` every time, nothing written. ``recipe``: see :func:`cache_key`.
    """
    if cache_dir is None:
        return build()
    key = cache_key(model_hash, data_hash, indices, binning, recipe)
    made = recipe.key() if recipe is not None else None
    kind = f"{made['method']}-{made['labels']}_" if made else ""
    path = Path(cache_dir) / f"signals_{binning.name}_{kind}{key}.json"
    if verify_file(path, "signals", unrecorded="record"):  # older entries: their fingerprint still guards them
        try:
            signals = load_signals(path, binning)
            if signals.metadata.get("fingerprint") != signals.fingerprint():
                raise SignalFileError(f"{path}: the signals do not match their recorded fingerprint (altered)")
            log.info("using cached signals %s", path)
            return signals
        except SignalFileError as exc:
            log.warning("rebuilding unreadable cached signals: %s", exc)
    signals = build()
    save_signals(signals, path)
    record_checksum(path)
    signals.source_path = path
    return signals
