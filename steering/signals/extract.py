"""Signals from a model: per category, the mean pass-1 128-d activation of each pathway."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steering.data import FeatureFile
from steering.data.binning import Binning
from steering.signals.diagnostics import signal_diagnostics
from steering.signals.signalset import PATHWAYS, SignalSet

log = logging.getLogger(__name__)

# Progress bars only when there is enough work to watch.
_PROGRESS_MIN_BATCHES = 20


def pass1_activations(
    model: torch.nn.Module,
    feature_file: FeatureFile,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Pass-1 (no feedback) 128-d activations, {pathway: (N, 128) float64}, in eval mode.

    The model is moved to ``device`` for the duration and put back on its device and in its
    training mode afterwards.
    """
    idx = np.asarray(indices, dtype=np.int64)
    device = torch.device(device)
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    chunks: dict[str, list[np.ndarray]] = {p: [] for p in PATHWAYS}
    n_batches = -(-idx.size // batch_size) if idx.size else 0
    try:
        model.to(device).eval()
        with torch.inference_mode():
            for batch in tqdm(
                feature_file.batches(idx, batch_size),
                total=n_batches,
                desc="signals",
                unit="batch",
                disable=n_batches < _PROGRESS_MIN_BATCHES,
            ):
                out = model.feedforward(batch.features.to(device))
                for p in PATHWAYS:
                    chunks[p].append(out[f"{p}_128d"].detach().to("cpu", torch.float64).numpy())
    finally:
        model.to(home).train(was_training)
    dim = getattr(getattr(model, "config", None), "source_dim", 128)
    return {p: np.concatenate(c) if c else np.zeros((0, dim)) for p, c in chunks.items()}


def signals_from_activations(
    activations: dict[str, np.ndarray], labels: np.ndarray, binning: Binning, min_samples: int | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int], list[str]]:
    """Mean activation per category with at least ``min_samples`` samples: (vectors, all counts, dropped)."""
    min_samples = binning.min_samples if min_samples is None else int(min_samples)
    vectors: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, int] = {}
    dropped: list[str] = []
    for cat in binning.categories:
        mask = labels == cat
        counts[cat] = int(mask.sum())
        if counts[cat] == 0:
            continue
        if counts[cat] < min_samples:
            dropped.append(cat)
            continue
        vectors[cat] = {p: activations[p][mask].mean(axis=0) for p in PATHWAYS}
    return vectors, counts, dropped


def extract_signals(
    model: torch.nn.Module,
    feature_file: FeatureFile,
    indices: Sequence[int] | np.ndarray,
    binning: Binning,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    min_samples: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> SignalSet:
    """Signals of ``binning`` from the samples ``indices`` of ``feature_file``.

    Categories come from the file's ratings; those with fewer than ``min_samples`` samples
    (default ``binning.min_samples``) get no signal. ``provenance`` (checkpoint hash, split, ...) goes
    into the metadata with the counts, the sample indices used and diagnostics; ``split: all`` is
    marked as leakage.
    """
    provenance = dict(provenance or {})
    idx = np.unique(np.asarray(indices, dtype=np.int64))
    if idx.size == 0:
        raise ValueError(f"{feature_file.path}: no samples to extract signals from")
    labels = binning.categorize(feature_file.valence[idx], feature_file.arousal[idx])
    activations = pass1_activations(model, feature_file, idx, batch_size=batch_size, device=device)
    min_samples = binning.min_samples if min_samples is None else int(min_samples)
    vectors, counts, dropped = signals_from_activations(activations, labels, binning, min_samples)
    if dropped:
        log.warning(
            "no signal for %s: fewer than %d samples (%s)",
            ", ".join(dropped),
            min_samples,
            ", ".join(str(counts[c]) for c in dropped),
        )
    if not vectors:
        raise ValueError(f"{feature_file.path}: no category has {min_samples} or more samples among {idx.size}")
    from steering import __version__

    split = provenance.get("split")
    leakage = split == "all" or bool(provenance.get("leakage", False))
    if leakage:
        log.warning("signals extracted from split %r include evaluated samples: marked as leakage", split)
    meta: dict[str, Any] = {
        **provenance,
        "binning": binning.name,
        "binning_config": binning.to_dict(),
        "split": split,
        "leakage": leakage,
        "min_samples": min_samples,
        "n_samples": int(idx.size),
        "counts": counts,
        "dropped": dropped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "framework_version": __version__,
        "indices": idx.tolist(),
    }
    meta.setdefault("data_hash", feature_file.fingerprint())
    meta.setdefault("data_path", str(feature_file.path))
    signals = SignalSet(
        binning_name=binning.name,
        vectors=vectors,
        counts={c: counts[c] for c in vectors},
        metadata=meta,
        generation_config={"method": "mean pass-1 activation", "min_samples": min_samples, "batch_size": batch_size},
    )
    signals.metadata["diagnostics"] = signal_diagnostics(signals, activations, labels)
    log.info(
        "extracted %d signals (%s) from %d samples of split %s", len(vectors), binning.name, idx.size, split or "?"
    )
    return signals
