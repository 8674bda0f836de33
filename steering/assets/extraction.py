"""Signals extracted to a file as ``steering.signals`` asks: inputs resolved and checked, provenance recorded."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from steering.assets.resolve import resolve_inputs
from steering.assets.validation import (
    check_batch_memory,
    check_features,
    check_signal_counts,
    check_signals_options,
)
from steering.config.schema import SignalsAppConfig
from steering.data import FeatureFile, file_hash, split_indices
from steering.data.binning import Binning
from steering.model import load_model
from steering.signals.extract import extract_signals
from steering.signals.io import save_signals
from steering.signals.signalset import PATHWAYS
from steering.util.hardware import resolve_device

log = logging.getLogger("steering.signals")


def extract_to_file(config: SignalsAppConfig) -> Path:
    """Extract and save the signals ``config`` describes (the ``conf/signals.yaml`` shape); returns the file."""
    binning = Binning.from_conf(config.binning)
    check_signals_options(asdict(config))
    checkpoint, features = resolve_inputs(config)
    device = resolve_device(config.device)
    model = load_model(checkpoint, device=device, trust_pickle=config.model.trust_pickle)
    with FeatureFile(features) as ff:
        indices = split_indices(len(ff), config.split, config.data.split, config.data.train_fraction)
        check_batch_memory(ff, model, config.batch_size)
        check_features(ff, model.config.mel_bins, indices, what="signal-split")
        min_samples = binning.min_samples if config.min_samples is None else int(config.min_samples)
        option = "binning.min_samples" if config.min_samples is None else "min_samples"
        check_signal_counts(ff, indices, binning, min_samples, option=option, split_option="split")
        provenance: dict[str, Any] = {
            "split": config.split,
            "split_scheme": config.data.split,
            "train_fraction": config.data.train_fraction,
            "checkpoint_hash": file_hash(checkpoint),
            "checkpoint_path": str(checkpoint),
            "data_hash": ff.fingerprint(),
            "data_path": str(features),
        }
        signals = extract_signals(
            model,
            ff,
            indices,
            binning,
            batch_size=config.batch_size,
            device=device,
            min_samples=config.min_samples,
            provenance=provenance,
        )
    path = save_signals(signals, Path(config.output))
    diag = signals.metadata.get("diagnostics", {})
    summary = ", ".join(
        f"{p}: cosine distance {diag.get(f'{p}_mean_cosine_distance', float('nan')):.3g}, "
        f"separation {diag.get(f'{p}_separation_ratio', float('nan')):.2f}"
        for p in PATHWAYS
    )
    log.info(
        "%d/%d %s signals from %d %s samples%s -> %s (%s)",
        len(signals),
        len(binning.categories),
        binning.name,
        signals.metadata["n_samples"],
        config.split,
        " [LEAKAGE]" if signals.metadata["leakage"] else "",
        path,
        summary,
    )
    return path
