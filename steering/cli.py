"""What every app shares: Hydra composes, the config is parsed once, known errors print in one line.

``@hydra_app("run")`` makes an app's task take the typed config (``steering.config.schema``) that
``OmegaConf.to_object`` gives right after composition, so nothing below the apps sees Hydra's
raw config. :func:`run_app` is each console script's entry: a known error (a
:class:`~steering.errors.SteeringError`, or MLflow's as a tracking error) prints
``error: <what>: <problem>`` on stderr and exits with status 2 (so do the machine's errors: a
full disk, a read-only folder, unreadable HDF5 or YAML bytes, data nested too deeply, memory),
the traceback only with ``HYDRA_FULL_ERROR=1``; SIGTERM is handled like Ctrl-C, so runs end as
KILLED, and what must learn of an interrupt (a sweep's parent run) registers with
:func:`on_interrupt`. This module imports no domain module.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import errno
import functools
import gc
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from steering.errors import SteeringError, Terminated, TrackingError, one_line

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
#: Set while run_app has set HYDRA_FULL_ERROR itself (so it is not mistaken for the user's choice).
_WRAPPED_ENV = "_STEERING_ONE_LINE_ERRORS"
USAGE_EXIT = 2
T = TypeVar("T")


# --------------------------------------------------------------------------- parsing at the boundary
def hydra_app(config_name: str) -> Callable[[Callable[[Any], T]], Callable[[], T]]:
    """Decorator: the task runs under ``@hydra.main`` on ``conf/<config_name>.yaml`` with one-line
    errors, and receives the composed config as its typed dataclass (:func:`typed`)."""
    import hydra

    from steering.config import config_dir

    def wrap(task: Callable[[Any], T]) -> Callable[[], T]:
        @functools.wraps(task)
        def parsed(cfg: Any) -> T:
            return task(typed(cfg))

        return hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(
            one_line_errors(parsed)
        )

    return wrap


def typed(cfg: Any) -> Any:
    """The composed config as the dataclass of its schema, interpolations resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(cfg)


def hydra_output_dir() -> str | None:
    """This job's output directory (Hydra's ``runtime.output_dir``), None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def sweep_dir() -> str | None:
    """The sweep directory of this job in a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


# --------------------------------------------------------------------------- one-line errors
def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not c for c in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _find_known(exc: BaseException) -> BaseException | None:
    """The error to report: ours first (anywhere in the chain), else MLflow's (a tracking failure)."""
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, SteeringError):
            return error
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # loaded when MLflow raised anything
    if mlflow_exceptions is None:
        return None
    for error in chain:
        if isinstance(error, mlflow_exceptions.MlflowException):
            uri = os.environ.get("MLFLOW_TRACKING_URI") or _current_tracking_uri()
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            return TrackingError(f"{uri}: {first}")
    return None


def _current_tracking_uri() -> str:
    mlflow = sys.modules.get("mlflow")
    try:
        return str(mlflow.get_tracking_uri()) if mlflow else "tracking"
    except Exception:
        return "tracking"


def _hydra_compact(exc: BaseException) -> str | None:
    """Hydra's own config errors (unknown option, bad override) as one line."""
    try:
        from hydra.errors import CompactHydraException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, CompactHydraException | OmegaConfBaseException):
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        if isinstance(exc.__cause__, OmegaConfBaseException):
            lines += [ln.strip() for ln in str(exc.__cause__).splitlines() if ln.strip()]
        skip = ("object_type", "reference_type")
        kept = [f"({ln})" if ln.startswith("full_key:") else ln for ln in lines if not ln.startswith(skip)]
        return " ".join(kept).split(" Config search path:")[0]
    return None


def error_line(exc: BaseException) -> str | None:
    """The one line for a known error, a Hydra config error or an environment error (disk full,
    read-only folder, unreadable HDF5 or YAML, too deep, out of memory); None for anything else (a bug)."""
    known = _find_known(exc)
    if known is not None:
        return one_line(known)
    compact = _hydra_compact(exc)
    if compact:
        return f"error: {compact}"
    for error in _chain(exc):
        problem = _environment_problem(error)
        if problem is not None:
            return "error: " + " ".join(f"{_subject(error) or 'file system'}: {problem}".split())
    return None


# --------------------------------------------------------------------------- environment errors
#: OSError numbers a user meets, in words that say what to fix.
_ERRNO_WORDS = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: Names of locals that hold the file a failing frame was working on, most telling first.
_SUBJECT_LOCALS = ("path", "filename", "output_dir", "directory", "output", "target", "tmp")


def _environment_problem(exc: BaseException) -> str | None:
    """What went wrong, for errors of the machine or of a file's bytes rather than of our code."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    if _raised_in(exc, "h5py") and isinstance(exc, KeyError | ValueError | RuntimeError | OSError | TypeError):
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else first
        return f"HDF5 error ({text[:300]})"
    if isinstance(exc, OSError):
        return exc.strerror or first
    yaml_error = getattr(sys.modules.get("yaml"), "YAMLError", None)
    if yaml_error is not None and isinstance(exc, yaml_error):
        return f"not valid YAML here ({' '.join(str(exc).split())[:300]})"
    if isinstance(exc, RecursionError):
        return "nested too deeply to read (RecursionError)"
    if isinstance(exc, MemoryError):
        return f"out of memory ({first or 'MemoryError'})"
    return None


def _frames(exc: BaseException) -> list[Any]:
    """The frames of ``exc``'s traceback, innermost first."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]


def _raised_in(exc: BaseException, package: str) -> bool:
    frames = _frames(exc)
    return bool(frames) and str(frames[0].f_globals.get("__name__", "")).split(".")[0] == package


def _subject(exc: BaseException) -> str | None:
    """The file an environment error concerns: its own file name, the YAML stream's, the HDF5
    object's, else a path held by the innermost frame that names one."""
    for name in (getattr(exc, "filename", None), getattr(getattr(exc, "problem_mark", None), "name", None)):
        if isinstance(name, str | os.PathLike) and not str(name).startswith("<"):
            return str(name)
    h5py = sys.modules.get("h5py")
    for frame in _frames(exc)[:5000]:
        local = frame.f_locals
        owner = local.get("self")
        if h5py is not None and isinstance(owner, h5py.HLObject):
            with contextlib.suppress(Exception):
                return _target(str(owner.file.filename))
        for key in _SUBJECT_LOCALS:
            value = local.get(key)
            if isinstance(value, str | os.PathLike) and os.sep in str(value):
                return _target(str(value))
    return None


def _target(name: str) -> str:
    """The file an atomic write was writing (``steering.util.files``: ``<name>.<pid>.<hex>.tmp``)."""
    return re.sub(r"\.\d+\.[0-9a-f]{8}\.tmp$", "", name)


def _full_error() -> bool:
    return os.environ.get(FULL_ERROR_ENV, "") not in ("", "0") and not os.environ.get(_WRAPPED_ENV)


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def one_line_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Task-function decorator (under ``@hydra.main``): a known error of a single run exits 2 in one line.

    In a multirun the error is re-raised, so the job counts as failed and the sweep goes on.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return task(*args, **kwargs)
        except Exception as exc:
            line = error_line(exc)
            if line is None or _full_error() or _multirun():
                raise
            print(line, file=sys.stderr, flush=True)
            raise SystemExit(USAGE_EXIT) from None

    return wrapper


# --------------------------------------------------------------------------- interrupts
@dataclass
class _Session:
    """One run of an app: whether SIGTERM arrived, and who must learn of an interrupt."""

    sigterm: bool = False
    hooks: list[Callable[[], None]] = field(default_factory=list)

    def interrupted(self) -> None:
        for hook in self.hooks:
            hook()


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("steering_app_session", default=None)


def on_interrupt(hook: Callable[[], None]) -> None:
    """Call ``hook`` if this app ends by Ctrl-C or SIGTERM (e.g. the sweep marks its parent run KILLED).

    A no-op outside :func:`run_app` (a task function called directly, as in tests).
    """
    session = _SESSION.get()
    if session is not None:
        session.hooks.append(hook)


def _exit_interrupted(session: _Session, terminated: bool) -> None:
    session.interrupted()
    where = _sweep_dir_quietly()
    note = f"; the sweep's results so far are in {where} (rerun with resume=true to complete it)" if where else ""
    print("error: interrupted" + (" (SIGTERM)" if terminated else "") + note, file=sys.stderr, flush=True)
    sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))


def _sweep_dir_quietly() -> str | None:
    """The interrupted multirun's sweep directory, if Hydra still knows it (never raises)."""
    try:
        return sweep_dir()
    except Exception:
        return None


def _install_sigterm_handler(session: _Session) -> None:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread."""

    def raise_terminated(signum: int, _frame: Any) -> None:
        # An interrupt that lands inside a library (e.g. while Hydra composes the next job's config)
        # can come back wrapped in another exception, and must still end as interrupted.
        session.sigterm = True
        raise Terminated(f"signal {signum}")

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, raise_terminated)


def run_app(main: Callable[[], Any]) -> None:
    """Run a Hydra ``main`` with one-line errors (exit 2) and SIGTERM handled like Ctrl-C."""
    full = _full_error()
    # Let exceptions reach this wrapper instead of Hydra's traceback printer.
    if not full:
        os.environ[FULL_ERROR_ENV] = "1"
        os.environ[_WRAPPED_ENV] = "1"
    # At exit, the interpreter's last garbage collection walks every object the run left (seconds
    # after a sweep); freezing them first skips that walk. Registered here, it runs only as the
    # process ends, after every atexit hook registered later (the sweep's own) has run.
    atexit.register(gc.freeze)
    session = _Session()
    token = _SESSION.set(session)
    _install_sigterm_handler(session)
    try:
        main()
    except KeyboardInterrupt as exc:
        if full:
            session.interrupted()
            raise
        _exit_interrupted(session, isinstance(exc, Terminated))
    except Exception as exc:
        if session.sigterm:  # the interrupt surfaced as another library's error
            if full:
                session.interrupted()
                raise
            _exit_interrupted(session, True)
        if full:
            raise
        line = error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT)
    finally:
        _SESSION.reset(token)
        if not full:
            os.environ.pop(FULL_ERROR_ENV, None)
            os.environ.pop(_WRAPPED_ENV, None)
