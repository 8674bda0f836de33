"""Strengths the other jobs of the current sweep will ask for, so they can share one forward."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from steering.sweep.overrides import values_of

log = logging.getLogger(__name__)


def sweep_strengths(sweep_dir: str | Path | None) -> list[float]:
    """Every strength of the sweep in ``sweep_dir`` (from Hydra's ``multirun.yaml``), or []."""
    if sweep_dir is None:
        return []
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return []
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        task = [str(o) for o in hydra_cfg.overrides.task]
        params = hydra_cfg.get("sweeper", {}).get("params") or {}
        return sorted({float(v) for v in values_of("strength", task, params)})
    except Exception as exc:  # a plan we cannot read only costs speed
        log.debug("could not read sweep strengths from %s: %s", path, exc)
        return []
