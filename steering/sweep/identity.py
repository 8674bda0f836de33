"""Who a sweep is: its id, preset, the keys it varies and its parent run's tags.

One definition for both kinds of sweep: a tracked sweep creates its parent run with these tags at the
start (:mod:`steering.sweep.callback`); an offline sweep writes them into its sweep file, and
``steering-merge`` creates the parent from it later (:mod:`steering.sweep.offline`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from omegaconf import DictConfig, OmegaConf

from steering.sweep import overrides
from steering.sweep import table as tbl
from steering.tracking.runs import process_tags


def new_sweep_id() -> str:
    """A sweep id that sorts by start time and does not collide between sweeps started together."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def launcher_name(config: DictConfig) -> str:
    """The launcher's ``_target_``, lower-cased; empty for Hydra's basic launcher."""
    return str(OmegaConf.select(config, "hydra.launcher._target_") or "").lower()


@dataclass(frozen=True)
class SweepIdentity:
    sweep_id: str
    preset: str | None
    varied: list[str]
    tags: dict[str, str]

    @property
    def run_name(self) -> str:
        return f"sweep-{self.preset or 'multirun'}-{self.sweep_id}"


def sweep_identity(config: DictConfig, sweep_id: str, **extra_tags: str) -> SweepIdentity:
    """The sweep's identity and its parent run's tags (``extra_tags`` added, e.g. where the sweep lives)."""
    preset = OmegaConf.select(config, "hydra.runtime.choices.experiment")
    task, params = overrides.task_and_params(config)
    varied = overrides.varied_keys(task, params)
    tags = {
        tbl.TAG_SWEEP_ID: sweep_id,
        tbl.TAG_ROLE: "parent",
        tbl.TAG_VARIED: json.dumps(varied),
        "sweep_command_overrides": json.dumps(task)[:5000],
        "sweep_launcher": launcher_name(config) or "basic",
        **extra_tags,
        **process_tags(),
    }
    if preset:
        tags[tbl.TAG_PRESET] = str(preset)
    return SweepIdentity(sweep_id, str(preset) if preset else None, varied, tags)
