"""Reference activations for the ``random`` control: pass 1 of the samples the signals come from.

The control must not be shaped by the evaluated clips, so its distribution comes from the split
the signals were averaged over: the signal file's recorded ``metadata.indices`` when they refer to
this feature file, else the configured ``signals.split``; evaluated clips are always left out.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from steering.data import FeatureFile, indices_hash, split_indices
from steering.signals.extract import pass1_activations
from steering.signals.signalset import PATHWAYS, SignalSet

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
) -> np.ndarray:
    """Sorted file indices of the signals' own samples, minus ``exclude`` (the evaluated clips)."""
    meta = signals.metadata or {}
    recorded = np.asarray(meta.get("indices") or [], dtype=np.int64)
    same_file = meta.get("data_hash") in (None, data_hash)
    if recorded.size and same_file and recorded.min() >= 0 and recorded.max() < len(ff):
        idx, origin = recorded, "the signal file's metadata.indices"
    else:
        if recorded.size:
            log.warning("signal file indices refer to another feature file; random control uses split %r", split)
        idx, origin = split_indices(len(ff), split, scheme, train_fraction), f"split {split!r}"
    kept = np.setdiff1d(idx, np.asarray(exclude, dtype=np.int64))
    if kept.size < idx.size:
        log.warning("random control: %d evaluated clips left out of %s", idx.size - kept.size, origin)
    if kept.size < 2:
        raise ValueError(f"{ff.path}: the random control needs >= 2 non-evaluated samples from {origin}")
    log.info("random control drawn from the pass-1 activations of %d clips (%s)", kept.size, origin)
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
    """Pass-1 128-d activations {pathway: (M, 128)} of ``indices``, cached on disk by model, data and indices."""
    path = None
    if cache_dir is not None:
        key = f"{model_hash}_{data_hash}_{indices_hash(indices)}"
        path = Path(cache_dir) / "activations" / f"pass1_{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as stored:
                    return {p: stored[p] for p in PATHWAYS}
            except (OSError, KeyError, ValueError) as exc:
                log.warning("recomputing unreadable cached activations %s: %s", path, exc)
    acts = pass1_activations(model, ff, indices, batch_size=batch_size, device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **acts)
        tmp.replace(path)
    return acts
