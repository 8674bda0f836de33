"""Interrupted sweeps: how many jobs were planned, children left RUNNING, and the note in the table."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def planned_jobs(config: DictConfig) -> int | None:
    """Jobs of a grid sweep (command-line and ``hydra.sweeper.params`` sweeps); None for other sweepers."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    if not sweeper.endswith("BasicSweeper"):
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or [])
    overrides = [f"{k}={v}" for k, v in params.items()] + task
    sizes: dict[str, int] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return None
            sizes[override.get_key_element()] = len(list(override.sweep_string_iterator()))
        else:
            sizes[override.get_key_element()] = 1
    return math.prod(sizes.values()) if sizes else 1


def end_running_children(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Children of the sweep still RUNNING when it ends (workers killed with it) get ``status``."""
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    runs = client.search_runs([experiment_id], query, max_results=1000)
    for run in runs:
        client.set_tag(run.info.run_id, "ended_by", "the sweep ended before this job")
        client.set_terminated(run.info.run_id, status)
    if runs:
        log.warning("%d job run(s) were still RUNNING when the sweep ended: marked %s", len(runs), status)
    return len(runs)


def note_unfinished(markdown: Path, planned: int | None, rows: int, interrupted: bool) -> int | None:
    """Add to comparison.md how many planned jobs never ran; returns that number (None if unknown)."""
    never = None if planned is None else max(planned - rows, 0)
    if not interrupted and not never:
        return never
    what = "Interrupted: " if interrupted else ""
    count = f"{never} of {planned} planned jobs never ran" if never is not None else "some jobs may not have run"
    note = f"**{what}{count}.** Rerun the same command with `resume=true` to complete the table."
    text = markdown.read_text() if markdown.is_file() else ""
    head, _, rest = text.partition("\n\n")
    markdown.write_text(f"{head}\n\n{note}\n\n{rest}" if rest else f"{text}\n\n{note}\n")
    return never
