"""``torch.load`` that never runs code from the file: tensors, containers and a few numpy types only.

Older checkpoints carry harmless numpy objects (a ``best_val_pearson`` saved as ``numpy.float64``,
arrays, dtypes); those are allowed through ``torch.serialization.safe_globals``. Anything else is
refused with one line naming the file and the type, unless the caller trusts the file
(``model.trust_pickle=true``), which is logged as a warning.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from steering.errors import SteeringError

log = logging.getLogger(__name__)

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")


class TorchFileError(SteeringError, ValueError):
    """A torch file that cannot be loaded safely."""


class UnsafeFileError(TorchFileError):
    """A torch file that would need arbitrary unpickling (it names a type outside the allow-list)."""


class UnreadableFileError(TorchFileError):
    """A file that is not a readable torch file (truncated, another format)."""


def _numpy_globals() -> list[Any]:
    """numpy's scalar/array reconstructors and dtype classes, also under their numpy 1.x module names."""
    from numpy._core.multiarray import _reconstruct, scalar

    dtypes = {type(np.dtype(code)) for code in "?bhilqpBHILQPefdgFDGUSVOMm"}
    return [
        scalar,
        _reconstruct,
        np.ndarray,
        np.dtype,
        *sorted(dtypes, key=lambda t: t.__name__),
        (scalar, "numpy.core.multiarray.scalar"),
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
    ]


def _weights_only_detail(exc: Exception) -> str:
    """The unpickler's own reason, without torch's advice around it."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Check the doc")]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _offending_type(path: Path | IO[bytes], exc: Exception) -> str | None:
    match = _UNSUPPORTED.search(str(exc))
    if match:
        return match.group(1)
    try:
        if not isinstance(path, Path):
            path.seek(0)
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _numpy_globals()}
        unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        return ", ".join(unsafe[:3]) or None
    except Exception:  # legacy (non-zip) files cannot be listed
        return None


def safe_torch_load(path: str | Path | IO[bytes], map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """Load a torch file with ``weights_only=True`` (numpy scalars/arrays/dtypes allowed).

    Raises :class:`UnsafeFileError` naming the file and the offending type when the file needs
    more, and :class:`UnreadableFileError` when it is no torch file at all. ``trust_pickle=True``
    falls back to full unpickling for such files, with a warning.
    """
    path = Path(path) if isinstance(path, str | Path) else path
    try:
        with torch.serialization.safe_globals(_numpy_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise UnreadableFileError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None
        offending = _offending_type(path, exc)
        detail = _weights_only_detail(exc)
        what = f"refusing to unpickle {offending}" if offending else f"cannot be loaded safely ({detail})"
        if not trust_pickle:
            raise UnsafeFileError(
                f"{path}: {what}; only tensors, containers and numpy values load safely "
                "(set model.trust_pickle=true only if you trust this file)"
            ) from None
        log.warning("model.trust_pickle=true: fully unpickling %s (%s); this can run code", path, what)
        if not isinstance(path, Path):
            path.seek(0)
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # malformed bytes make the unpickler fail in many ways (IndexError, KeyError, ...)
        raise UnreadableFileError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0].split(". ")[0] if text else type(exc).__name__)[:200]
