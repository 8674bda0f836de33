"""Interrupted sweeps: how many jobs were planned, children left RUNNING, and the note in the table.

An interrupted sweep ends within seconds (docs/sweeps.md, "Interrupting a sweep"): its clean-up
(:func:`finish_interrupted`) closes the runs first, then writes only the table from the jobs that
finished (no figures, no analyses: ``python -m steering.report`` or ``resume=true`` makes them
later), and :func:`bounded_cleanup` ends the process if that still takes too long or the user
interrupts again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from steering.sweep import overrides
from steering.sweep import table as tbl
from steering.sweep.parent import annotate_parent

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
        self.signum: int | None = None  # the signal that interrupted the sweep, once one did

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
        self.signum = signum
        self.on_interrupt()
        self._act(signum, frame)

    def act_again(self) -> None:
        """Let the previous handler act again on the signal that interrupted the sweep, if one did.

        Python runs a handler between any two bytecodes, also inside a weakref callback or a
        ``__del__``, where the exception it raises (KeyboardInterrupt, Terminated) is printed and
        dropped: the sweep would carry on. The sweep calls this at each job boundary, so a dropped
        interrupt still ends it there.
        """
        if self.signum is not None:
            self._act(self.signum, None)

    def _act(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
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


#: Seconds an interrupted sweep's clean-up may take before the process ends without it.
CLEANUP_SECONDS = 10.0


@contextlib.contextmanager
def bounded_cleanup(
    sweep_dir: Path, seconds: float = CLEANUP_SECONDS, status: int = 128 + signal.SIGTERM
) -> Iterator[None]:
    """The clean-up of an interrupted sweep, cut short after ``seconds`` or at a second Ctrl-C/SIGTERM.

    Whoever interrupts a sweep expects it gone within seconds; a loaded machine can make even the
    short clean-up slow. Cut short, the process ends at once with ``status`` and one line; what the
    clean-up had not closed, ``resume=true`` finds (runs of a dead process are marked FAILED).
    """

    def give_up(reason: str, code: int) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        line = f"error: interrupted; {reason}: clean-up cut short, results so far in {sweep_dir}"
        with contextlib.suppress(Exception):
            print(line, file=sys.stderr, flush=True)
        os._exit(code)

    timer = threading.Timer(seconds, give_up, (f"clean-up took over {seconds:g} s", status))
    timer.daemon = True
    previous: dict[int, Any] = {}
    for sig in InterruptWatch.SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: the timer still bounds it
            previous[sig] = signal.signal(sig, lambda signum, _frame: give_up("interrupted again", 128 + signum))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)


def finish_interrupted(client: MlflowClient, info: dict[str, Any], sweep_dir: Path) -> Path:
    """What an interrupted sweep leaves, in the order that matters if it is cut short: no run left
    RUNNING (the parent ends KILLED), then ``comparison.csv``/``.md`` of the jobs that finished with
    the note on those that never ran, attached to the parent with its summary. No figures or
    analyses (``python -m steering.report sweep=<id>`` builds the full report from the store)."""
    end_running_children(client, info["experiment_id"], info["run_id"])
    client.set_terminated(info["run_id"], "KILLED")
    try:
        return _interrupted_table(client, info, sweep_dir)
    except Exception as exc:  # the runs are closed; a table that cannot be written is one line, not a traceback
        log.warning("sweep %s interrupted; its table could not be written: %s", info["sweep_id"], exc)
        return sweep_dir / "comparison.csv"


def _interrupted_table(client: MlflowClient, info: dict[str, Any], sweep_dir: Path) -> Path:
    """comparison.csv/.md of the jobs that finished, the note on those that never ran, the parent's summary."""
    runs = tbl.find_sweep(client, info["sweep_id"], [info["experiment_id"]])
    table = tbl.comparison_table(runs.children, info["varied"])
    csv, markdown = sweep_dir / "comparison.csv", sweep_dir / "comparison.md"
    table.to_csv(csv, index=False)
    markdown.write_text(tbl.describe(table, info["sweep_id"]))
    never = note_unfinished(markdown, info.get("planned_jobs"), len(table), interrupted=True)
    for path in (csv, markdown):
        client.log_artifact(info["run_id"], str(path))
    annotate_parent(client, info["run_id"], runs, table, info["sweep_id"])
    if never is not None:
        now = int(time.time() * 1000)
        client.log_batch(info["run_id"], metrics=[Metric("n_not_run", float(never), now, 0)])
    finished = int((table["status"] == "FINISHED").sum()) if len(table) else 0
    planned = info.get("planned_jobs")
    log.warning(
        "sweep %s interrupted: %d of %s jobs finished; table so far in %s; rerun the same command with "
        "resume=true to complete it, or `python -m steering.report sweep=%s` for the figures",
        info["sweep_id"],
        finished,
        planned if planned is not None else len(table),
        csv,
        info["sweep_id"],
    )
    return csv
