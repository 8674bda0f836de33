"""Strengths the other jobs of the current sweep will ask for, so they can share one forward."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def _values(parser: OverridesParser, override: str) -> list[float]:
    parsed = parser.parse_override(override)
    if parsed.key_or_group != "strength":
        return []
    raw = list(parsed.sweep_string_iterator()) if parsed.is_sweep_override() else [str(parsed.value())]
    return [float(v) for v in raw]


def sweep_strengths(sweep_dir: str | Path | None) -> list[float]:
    """Every strength of the sweep in ``sweep_dir`` (from Hydra's ``multirun.yaml``), or []."""
    if sweep_dir is None:
        return []
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return []
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        parser = OverridesParser.create()
        found: list[float] = []
        for override in hydra_cfg.overrides.task:
            found += _values(parser, override)
        params = hydra_cfg.get("sweeper", {}).get("params") or {}
        if "strength" in params:
            found += _values(parser, f"strength={params['strength']}")
        return sorted(set(found))
    except Exception as exc:  # a plan we cannot read only costs speed
        log.debug("could not read sweep strengths from %s: %s", path, exc)
        return []
