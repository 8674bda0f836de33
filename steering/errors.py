"""Errors the user can fix, and the wrapper that prints them in one line.

Every app's ``__main__`` calls :func:`run_app`: a known error (bad input, config or tracking)
prints ``error: <what>: <problem>`` on stderr and exits with status 2; the traceback only with
``HYDRA_FULL_ERROR=1``. SIGTERM is handled like Ctrl-C, so runs end as KILLED and a sweep's
server stops with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
#: Set while run_app has set HYDRA_FULL_ERROR itself (so it is not mistaken for the user's choice).
_WRAPPED_ENV = "_STEERING_ONE_LINE_ERRORS"
USAGE_EXIT = 2


class ConfigError(ValueError):
    """An option with a value that cannot work; the message starts with the option's name."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option


class TrackingError(RuntimeError):
    """The MLflow store or server cannot be used; the message names the URI."""


class ResultError(RuntimeError):
    """A run whose predictions or metrics came out non-finite (the run fails instead of finishing)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same clean-up runs."""


def known_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe the user's input or environment (imported lazily)."""
    from steering.audio.frontend import AudioError
    from steering.data import FeatureFileError
    from steering.data.binning import BinningError
    from steering.engine import SteeringConfigError
    from steering.model import CheckpointError
    from steering.model.safe_load import TorchFileError
    from steering.prepare import PrepareError
    from steering.signals.io import SignalFileError

    return (
        ConfigError,
        TrackingError,
        ResultError,
        AudioError,
        BinningError,
        CheckpointError,
        FeatureFileError,
        PrepareError,
        SignalFileError,
        SteeringConfigError,
        TorchFileError,
    )


def one_line(exc: BaseException) -> str:
    """``error: <what>: <problem>`` in one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {text}"


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
    known = known_errors()
    for error in chain:
        if isinstance(error, known):
            return error
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return None
    for error in chain:
        if isinstance(error, MlflowException):
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
    """The one line for a known error or a Hydra config error; None for anything else (a bug)."""
    known = _find_known(exc)
    if known is not None:
        return one_line(known)
    compact = _hydra_compact(exc)
    return f"error: {compact}" if compact else None


#: Set when SIGTERM arrived: an interrupt that lands inside a library (e.g. while Hydra composes the
#: next job's config) can come back wrapped in another exception, and must still end as interrupted.
_SIGTERM_RECEIVED = {"value": False}


def _raise_terminated(signum: int, _frame: Any) -> None:
    _SIGTERM_RECEIVED["value"] = True
    raise Terminated(f"signal {signum}")


def _interrupted(terminated: bool) -> None:
    _mark_sweep_interrupted()
    print("error: interrupted" + (" (SIGTERM)" if terminated else ""), file=sys.stderr, flush=True)
    sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))


def install_sigterm_handler() -> None:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, _raise_terminated)


def _mark_sweep_interrupted() -> None:
    callback = sys.modules.get("steering.sweep.callback")
    if callback is not None and hasattr(callback, "mark_interrupted"):
        callback.mark_interrupted()


def _full_error() -> bool:
    return os.environ.get(FULL_ERROR_ENV, "") not in ("", "0") and not os.environ.get(_WRAPPED_ENV)


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def one_line_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Task-function decorator (under ``@hydra.main``): a known error of a single run exits 2 in one line.

    In a multirun the error is re-raised, so the job counts as failed and the sweep goes on.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as exc:
            line = error_line(exc)
            if line is None or _full_error() or _multirun():
                raise
            print(line, file=sys.stderr, flush=True)
            raise SystemExit(USAGE_EXIT) from None

    return wrapper


def run_app(main: Callable[[], Any]) -> None:
    """Run a Hydra ``main`` with one-line errors (exit 2) and SIGTERM handled like Ctrl-C."""
    full = _full_error()
    # Let exceptions reach this wrapper instead of Hydra's traceback printer.
    if not full:
        os.environ[FULL_ERROR_ENV] = "1"
        os.environ[_WRAPPED_ENV] = "1"
    install_sigterm_handler()
    try:
        main()
    except KeyboardInterrupt as exc:
        if full:
            _mark_sweep_interrupted()
            raise
        _interrupted(isinstance(exc, Terminated))
    except Exception as exc:
        if _SIGTERM_RECEIVED["value"]:  # the interrupt surfaced as another library's error
            if full:
                _mark_sweep_interrupted()
                raise
            _interrupted(True)
        if full:
            raise
        line = error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT)
    finally:
        if not full:
            os.environ.pop(FULL_ERROR_ENV, None)
            os.environ.pop(_WRAPPED_ENV, None)
