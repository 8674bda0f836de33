"""Jobs that run in worker processes (joblib, Submitit): they end with the sweep, and the sweep tells
how far they got.

- :func:`die_with_sweep`, at each job's start in a worker: a joblib (loky) worker (or a
  ``submitit_local`` job) is a child of the sweep's process, and would otherwise finish its job (and
  idle for minutes) after that process was killed with SIGKILL, which no clean-up can catch. Linux's
  parent-death signal ends it with its parent; elsewhere a watchdog thread notices the parent is gone.
- :func:`record_job_end`, at each job's end in a worker, and :class:`JobProgress`, a thread in the
  sweep's process: each finished job leaves a small file in ``<sweep dir>/.progress/``, and the sweep
  prints one line per job as it finishes (the parallel launchers print nothing while they wait).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The sweep's process id, set in its environment at the sweep's start so that workers inherit it.
SWEEP_PID_ENV = "STEERING_SWEEP_PID"
PROGRESS_DIR = ".progress"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def mark_sweep_process() -> None:
    """Called in the sweep's process before it launches jobs: workers started later know their sweep.

    Also quiets the resource trackers that multiprocessing and loky start with the workers: after an
    interrupt they free the semaphores of the killed workers, as designed, but say so with a warning
    on the terminal. They take their warning options from this interpreter's (``-W``).
    """
    os.environ[SWEEP_PID_ENV] = str(os.getpid())
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)


def sweep_pid() -> int | None:
    """The pid of the sweep this process works for; None outside a sweep or in the sweep's own process."""
    try:
        pid = int(os.environ.get(SWEEP_PID_ENV, ""))
    except ValueError:
        return None
    return None if pid == os.getpid() else pid


def set_parent_death_signal(sig: int) -> bool:
    """Linux ``prctl(PR_SET_PDEATHSIG, sig)``: the kernel sends ``sig`` when the parent ends."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(128 + signal.SIGKILL)


def die_with_sweep(interval: float = 1.0) -> str | None:
    """In a job process that the sweep's process started itself (a loky worker, a ``submitit_local``
    job): end this process when the sweep's process ends. Returns how (``pdeathsig`` or ``watchdog``),
    or None where it does not apply (an in-process job, a SLURM job, whose parent is SLURM's)."""
    parent = sweep_pid()
    if parent is None or os.getppid() != parent:
        return None
    how = "pdeathsig" if set_parent_death_signal(signal.SIGKILL) else "watchdog"
    if os.getppid() != parent:  # the parent died before the signal was armed: it would never come
        os._exit(128 + signal.SIGKILL)
    if how == "watchdog":
        threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True, name="sweep-watchdog").start()
    return how


def record_job_end(
    sweep_dir: str | Path, num: int, status: str, seconds: float, task: Sequence[str], error: str = ""
) -> None:
    """A job's end, for the sweep's :class:`JobProgress` (written atomically: the reader never sees half a file)."""
    folder = Path(sweep_dir) / PROGRESS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    record = {"num": num, "status": status, "seconds": round(seconds, 1), "task": list(task), "error": error[:300]}
    part = folder / f".{num}.{os.getpid()}.part"
    part.write_text(json.dumps(record))
    part.replace(folder / f"{num}.json")


class JobProgress:
    """A thread in the sweep's process: one log line per job as its end is recorded, e.g.
    ``[3/8] job 2 finished in 12 s: method=bypass layer=conv3``."""

    def __init__(
        self, sweep_dir: str | Path, planned: int | None, varied: Sequence[str], interval: float = 1.0
    ) -> None:
        self.folder = Path(sweep_dir) / PROGRESS_DIR
        self.planned = planned
        self.varied = list(varied)
        self.interval = interval
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sweep-progress")

    def start(self) -> JobProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Report what is left to report, then end the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
        self.poll()

    def poll(self) -> list[str]:
        """Lines for the jobs that ended since the last poll (also logged)."""
        lines = []
        with contextlib.suppress(OSError):
            for path in sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
                if path.name in self.seen:
                    continue
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                self.seen.add(path.name)
                lines.append(self.describe(record))
                log.info("%s", lines[-1])
        return lines

    def describe(self, record: Mapping[str, Any]) -> str:
        from steering.sweep.overrides import override_values

        values = override_values(record.get("task", []))
        choices = " ".join(f"{k}={values[k]}" for k in self.varied if k in values)
        done = f"[{len(self.seen)}/{self.planned}]" if self.planned else f"[{len(self.seen)}]"
        what = "finished" if record.get("status") == "COMPLETED" else "FAILED"
        error = f" ({record['error']})" if record.get("error") else ""
        return f"{done} job {record.get('num')} {what} in {record.get('seconds', 0):.0f} s: {choices}{error}".rstrip()
