"""``python -m steering.signals``: extract steering signals from a model and a feature file.

    python -m steering.signals binning=25bin split=train output=signals_25bin.json \\
        model.checkpoint=model.pth data.path=features.h5
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from steering.assets.resolve import resolve_inputs
from steering.config import config_dir
from steering.data.binning import Binning
from steering.errors import one_line_errors

log = logging.getLogger("steering.signals")


def run_signals(cfg: DictConfig) -> Path:
    """Extract and save the signals described by ``cfg`` (the ``conf/signals.yaml`` shape); returns the file."""
    from steering import load_model
    from steering.assets.validation import check_features, check_signals_options
    from steering.data import FeatureFile, file_hash, split_indices
    from steering.engine.hardware import resolve_device
    from steering.signals.extract import extract_signals
    from steering.signals.io import save_signals
    from steering.signals.signalset import PATHWAYS

    binning = Binning.from_mapping(cfg.binning)
    check_signals_options(cfg)
    checkpoint, features = resolve_inputs(cfg)
    device = resolve_device(str(cfg.get("device", "auto")))
    model = load_model(checkpoint, device=device, trust_pickle=bool(cfg.model.get("trust_pickle", False)))
    with FeatureFile(features) as ff:
        indices = split_indices(len(ff), cfg.split, cfg.data.split, cfg.data.train_fraction)
        check_features(ff, model.config.mel_bins, indices, what="signal-split")
        provenance: dict[str, Any] = {
            "split": cfg.split,
            "split_scheme": cfg.data.split,
            "train_fraction": cfg.data.train_fraction,
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
            batch_size=int(cfg.batch_size),
            device=device,
            min_samples=cfg.get("min_samples"),
            provenance=provenance,
        )
    path = save_signals(signals, Path(cfg.output))
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
        cfg.split,
        " [LEAKAGE]" if signals.metadata["leakage"] else "",
        path,
        summary,
    )
    return path


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="signals")
@one_line_errors
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    run_signals(cfg)


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    from steering.errors import run_app

    run_app(main)


if __name__ == "__main__":
    cli()
