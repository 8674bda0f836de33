"""Interrupted sweeps: how many jobs were planned, children left RUNNING, and the note in the table."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from steering.sweep import overrides

log = logging.getLogger(__name__)


class InterruptWatch:
    """Notices Ctrl-C and SIGTERM while a sweep runs, then lets the previous handler act as before.

    The sweep's owner (the callback) installs it at the sweep's start and removes it at the end, so
    an interrupted sweep is known to be interrupted when it is finished (its parent ends KILLED).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_interrupt: Callable[[], None]) -> None:
        self.on_interrupt = on_interrupt
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: nothing to watch
                self._previous[sig] = signal.signal(sig, self._handle)

    def remove(self) -> None:
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if previous == signal.SIG_IGN:
            return
        self.on_interrupt()
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)  # the default action (end the process), as before
        os.kill(os.getpid(), signum)


def planned_jobs(config: DictConfig) -> int | None:
    """Jobs of a grid sweep (command-line and ``hydra.sweeper.params`` sweeps); None for other sweepers."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    if not sweeper.endswith("BasicSweeper"):
        return None
    return overrides.planned_jobs(*overrides.task_and_params(config))


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
