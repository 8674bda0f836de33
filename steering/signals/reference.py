"""Reference activations for the ``random`` control and ``signals.method=knn``: pass 1 of the samples the
signals come from.

Neither may be shaped by the evaluated clips, so its distribution comes from the split
the signals were averaged over: the signal file's recorded ``metadata.indices`` when they refer to
this feature file, else the configured ``signals.split``; evaluated clips are always left out.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from steering.data import FeatureFile, indices_hash, same_feature_file, split_indices
from steering.errors import ConfigError
from steering.signals.extract import pass1_activations
from steering.signals.signalset import PATHWAYS, SignalSet
from steering.util.cache import load_or_build

log = logging.getLogger(__name__)


def reference_indices(
    signals: SignalSet,
    ff: FeatureFile,
    data_hash: str,
    *,
    split: str,
    scheme: str,
    train_fraction: float,
    exclude: np.ndarray,
    purpose: str = "the random control",
) -> np.ndarray:
    """Sorted file indices of the signals' own samples, minus ``exclude`` (the evaluated clips).

    ``purpose`` names what reads them, in warnings and errors.
    """
    meta = signals.metadata or {}
    recorded = np.asarray(meta.get("indices") or [], dtype=np.int64)
    same_file = same_feature_file(meta.get("data_hash"), data_hash)
    if recorded.size and same_file and recorded.min() >= 0 and recorded.max() < len(ff):
        idx, origin = recorded, "the signal file's metadata.indices"
    else:
        if recorded.size:
            log.warning("signal file indices refer to another feature file; %s uses split %r", purpose, split)
        idx, origin = split_indices(len(ff), split, scheme, train_fraction), f"split {split!r}"
    kept = np.setdiff1d(idx, np.asarray(exclude, dtype=np.int64))
    if kept.size < idx.size:
        log.warning("%s: %d evaluated clips left out of %s", purpose, idx.size - kept.size, origin)
    if kept.size < 2:
        raise ConfigError("signals.split", f"{ff.path}: {purpose} needs >= 2 non-evaluated samples from {origin}")
    log.info("%s: the pass-1 activations of %d clips (%s)", purpose, kept.size, origin)
    return kept


def reference_activations(
    model: torch.nn.Module,
    ff: FeatureFile,
    indices: np.ndarray,
    *,
    model_hash: str,
    data_hash: str,
    batch_size: int,
    device: torch.device | str,
    cache_dir: str | Path | None,
) -> dict[str, np.ndarray]:
    """Pass-1 128-d activations {pathway: (M, 128)} of ``indices``, cached on disk by model, data and indices.

    The cache file is checksummed like every cache (steering.util.cache): an altered or torn one is
    recomputed with a warning.
    """
    path = None
    if cache_dir is not None:
        key = f"{model_hash}_{data_hash}_{indices_hash(indices)}"
        path = Path(cache_dir) / "activations" / f"pass1_{key}.npz"
    acts, _ = load_or_build(
        path,
        "pass-1 activations",
        decode=_decode_activations,
        encode=_encode_activations,
        build=lambda: pass1_activations(model, ff, indices, batch_size=batch_size, device=device),
    )
    return acts


def _decode_activations(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as stored:
        return {p: stored[p] for p in PATHWAYS}


def _encode_activations(acts: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **acts)
    return buffer.getvalue()
