"""What SLURM says about a sweep's jobs and nodes: job states, the largest node, cancelling.

Submitit reads job states only through ``sacct``, which fails on clusters without job accounting;
a job killed from outside (scancel, time limit, out of memory) then never counts as done and the
sweep waits forever. :class:`QueueWatch` asks ``squeue`` first (the controller knows every job it
still holds, finished ones included for ``MinJobAge``), and ``sacct`` only for jobs the controller
has forgotten; a ``sacct`` that fails is logged once per sweep, not at every poll.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# States after which a job never runs again (PREEMPTED and REQUEUED jobs come back).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# Reasons a job may pend for a long time without anything being wrong.
ORDINARY_PENDING = {"None", "Priority", "Resources", "JobArrayTaskLimit", "BeginTime", "Dependency", ""}
TIMEOUT_S = 30


@dataclass(frozen=True)
class JobState:
    """A job's SLURM state (``CANCELLED``, ``TIMEOUT``...) and the reason SLURM gives, if any."""

    state: str
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def describe(self) -> str:
        reason = self.reason if self.reason not in ("", "None") else ""
        return f"{self.state} ({reason})" if reason else self.state


GONE = JobState("UNKNOWN", "gone from the queue without a result")


def _run(command: list[str]) -> str | None:
    """stdout of a SLURM client command, or None if it fails (the caller decides what that means)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _parse(text: str) -> dict[str, JobState]:
    """``JobID|State|Reason`` lines; ``CANCELLED by 0`` keeps its first word as the state."""
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0]:
            continue
        words = parts[1].split()
        state = words[0] if words else "UNKNOWN"
        reason = parts[2] if len(parts) > 2 else ""
        if len(words) > 1:  # "CANCELLED by 0": who cancelled it
            reason = " ".join(words[1:]) if reason in ("", "None") else f"{reason}, {' '.join(words[1:])}"
        states[parts[0]] = JobState(state, reason)
    return states


@dataclass
class QueueWatch:
    """States of a sweep's array tasks (ids like ``12_0``); see the module docstring."""

    sacct_failed: bool = False
    warned: set[str] = field(default_factory=set)

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
        found = _parse(_run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-o", "%i|%T|%r"]) or "")
        missing = [job_id for job_id in job_ids if job_id not in found]
        if missing:
            found.update(self._sacct(arrays))
        return {job_id: found[job_id] for job_id in job_ids if job_id in found}

    def _sacct(self, arrays: Sequence[str]) -> dict[str, JobState]:
        if self.sacct_failed:
            return {}
        out = _run(["sacct", "-X", "-n", "-P", "-j", ",".join(arrays), "-o", "JobID,State,Reason"])
        if out is None:
            self.sacct_failed = True
            log.warning(
                "sacct does not answer (no SLURM job accounting?): job states come from squeue; "
                "a job that leaves the queue without a result counts as failed"
            )
            return {}
        return _parse(out)

    def note_pending(self, job_id: str, state: JobState) -> None:
        """Warn once per reason about a job that pends for a reason that may never go away."""
        if state.state == "PENDING" and state.reason not in ORDINARY_PENDING and state.reason not in self.warned:
            self.warned.add(state.reason)
            log.warning(
                "SLURM job %s is pending: %s (it may never start; see `squeue -j %s`)", job_id, state.reason, job_id
            )


def cancel(job_ids: Sequence[str], wait_s: float = 30.0) -> None:
    """Cancel the jobs (queued and running) and wait until they leave the queue.

    Running jobs get SIGKILL at once: Submitit's job process ignores SIGTERM, so a plain ``scancel``
    would leave it ``KillWait`` seconds to finish and log under a sweep that has already ended.
    """
    if not job_ids:
        return
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    _run(["scancel", "--full", "--signal=KILL", *arrays])
    _run(["scancel", *arrays])
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        left = _run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i"])
        if not (left or "").strip():
            return
        time.sleep(1)
    log.warning("SLURM jobs %s are still in the queue after scancel", ", ".join(arrays))


@dataclass(frozen=True)
class Node:
    """One node of a partition: its CPUs and memory (MB)."""

    cpus: int
    memory_mb: int


def partition_nodes(partition: str | None) -> list[Node] | None:
    """The nodes of ``partition`` (None: the default one) as ``sinfo`` lists them; None if sinfo fails."""
    out = _run(["sinfo", "-h", "-N", "-o", "%P|%c|%m"])
    if out is None:
        return None
    nodes = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        name, default = parts[0].rstrip("*"), parts[0].endswith("*")
        if (partition is None and default) or name == partition:
            try:
                nodes.append(Node(int(parts[1].rstrip("+")), int(parts[2].rstrip("+"))))
            except ValueError:
                continue
    return nodes
