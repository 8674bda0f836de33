"""What the jobs of one sweep share in this process: the sweep's reuse of sibling work.

A :class:`SweepContext` belongs to one sweep, known by its directory and the plan Hydra wrote
there (``multirun.yaml``): the first job of a sweep in this process opens it, later jobs of the
same sweep get it back, and a job of another sweep, or a standalone run, never sees another
sweep's predictions. The current one is held in a context variable, not a module dictionary, and
the sweep ends it (:func:`end_sweep`).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steering.engine.reuse import SweepReuse


def sweep_identity(sweep_dir: str | Path) -> tuple[str, int | None]:
    """The sweep directory and its plan's modification time (a re-run in the same folder is another sweep)."""
    plan = Path(sweep_dir) / "multirun.yaml"
    return str(Path(sweep_dir).resolve()), plan.stat().st_mtime_ns if plan.is_file() else None


@dataclass
class SweepContext:
    """One sweep's shared state in this process."""

    identity: tuple[str, int | None]
    reuse: SweepReuse

    @classmethod
    def open(cls, sweep_dir: str | Path) -> SweepContext:
        from steering.engine.reuse import SweepReuse
        from steering.sweep.siblings import sweep_strengths

        return cls(sweep_identity(sweep_dir), SweepReuse(tuple(sweep_strengths(sweep_dir))))


_CURRENT: contextvars.ContextVar[SweepContext | None] = contextvars.ContextVar("steering_sweep", default=None)


def sweep_context(sweep_dir: str | Path | None) -> SweepContext | None:
    """The context of the sweep in ``sweep_dir`` (opened on its first job here), or None outside sweeps."""
    if sweep_dir is None:
        end_sweep()
        return None
    current = _CURRENT.get()
    if current is None or current.identity != sweep_identity(sweep_dir):
        current = SweepContext.open(sweep_dir)
        _CURRENT.set(current)
    return current


def sweep_reuse(sweep_dir: str | Path | None) -> SweepReuse | None:
    """The reuse object of the sweep in ``sweep_dir``, or None outside sweeps."""
    context = sweep_context(sweep_dir)
    return context.reuse if context is not None else None


def end_sweep() -> None:
    """Forget the current sweep's context (its cached predictions go with it)."""
    _CURRENT.set(None)
