"""``torch.load`` that never runs code from the file: tensors, containers and a few numpy types only.

Older checkpoints carry harmless numpy objects (a ``best_val_pearson`` saved as ``numpy.float64``,
arrays, dtypes); those are allowed through ``torch.serialization.safe_globals``. Anything else is
refused with one line naming the file and the type, unless the caller trusts the file
(``model.trust_pickle=true``), which is logged as a warning.

The file's first bytes are looked at before torch is asked: a zip archive (``torch.save``) or a
legacy ``torch.save`` stream (it starts with torch's magic number). Other bytes are no PyTorch file,
even when trusted: a plain pickle is named as one (with the types it would import, read from its
opcodes without running them), anything else is "not a readable PyTorch file".
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from steering.errors import SteeringError

log = logging.getLogger(__name__)

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")
_ZIP_MAGIC = b"PK\x03\x04"
#: ``torch.save``'s legacy (non-zip) stream starts with this number, pickled.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
#: How much of a pickle is scanned for the types it names (a message, not a guarantee).
_SCAN_BYTES = 64 << 20
#: What the weights-only unpickler itself allows besides torch's own names.
_BUILTIN_SAFE = {
    "collections.OrderedDict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "_codecs.encode",
}


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
    """The unpickler's own reason, without torch's advice around it (an opcode by its name)."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Check the doc")]
    detail = (lines[0] if lines else type(exc).__name__)[:200]
    operand = re.fullmatch(r"Unsupported operand (\d+)", detail)
    if operand and int(operand.group(1)) < 256:
        op = {o.code.encode("latin-1")[0]: o.name for o in pickletools.opcodes}.get(int(operand.group(1)))
        detail = f"pickle opcode {op or operand.group(1)} is not supported by the safe loader"
    return detail


def _allowed_names() -> set[str]:
    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _numpy_globals()}


def _offending_type(path: Path | IO[bytes], exc: Exception, kind: str) -> str | None:
    match = _UNSUPPORTED.search(str(exc))
    if match:
        return match.group(1)
    try:
        if not isinstance(path, Path):
            path.seek(0)
        if kind == "zip":
            unsafe = [
                g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in _allowed_names()
            ]
        else:  # a legacy stream: its pickles' opcodes name the types
            unsafe = _unsafe_names(_head(path, _SCAN_BYTES))
        return ", ".join(unsafe[:3]) or None
    except Exception:  # a malformed file names nothing
        return None


def _head(path: Path | IO[bytes], size: int) -> bytes:
    """The first ``size`` bytes (a stream is put back where it was)."""
    if isinstance(path, Path):
        with open(path, "rb") as fh:
            return fh.read(size)
    where = path.tell()
    try:
        return path.read(size)
    finally:
        path.seek(where)


def _kind(head: bytes) -> str:
    """``zip``, ``legacy`` (torch.save's older stream), ``pickle`` (a plain one) or ``other``."""
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[257:262] == b"ustar":  # torch.save's oldest format, a tar archive
        return "legacy"
    if len(head) > 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return "legacy" if _LEGACY_MAGIC in head[:32] else "pickle"
    return "other"


def _scan_pickles(data: bytes) -> tuple[list[str], int]:
    """Every ``module.name`` the pickles in ``data`` import (GLOBAL, STACK_GLOBAL), read without running
    them, and how many pickles parsed to their end.

    ``recent`` follows what each opcode pushes (strings by value, anything else as None) and the memo
    by the same rule, so STACK_GLOBAL's two operands are known however the pickler spelled them.
    """
    names: list[str] = []
    stream = io.BytesIO(data)
    complete = 0
    try:
        while stream.tell() < len(data):
            recent: list[str | None] = []
            memo: dict[int, str | None] = {}
            for op, arg, _pos in pickletools.genops(stream):
                top = recent[-1] if recent else None
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                    recent.append(None)
                elif op.name == "STACK_GLOBAL":
                    if len(recent) >= 2 and recent[-2] and recent[-1]:
                        names.append(f"{recent[-2]}.{recent[-1]}")
                    recent.append(None)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = top
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[int(arg)] = top
                elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                    recent.append(memo.get(int(arg)))
                elif op.stack_after:
                    recent.append(arg if isinstance(arg, str) and "UNICODE" in op.name else None)
            complete += 1
    except Exception:  # cut off by the scan limit, or raw storage bytes after a legacy file's pickles
        pass
    return list(dict.fromkeys(names)), complete


def _unsafe_names(data: bytes) -> list[str]:
    allowed = _allowed_names() | _BUILTIN_SAFE
    return [n for n in _scan_pickles(data)[0] if n not in allowed and not n.startswith("torch.")]


#: A legacy torch.save stream: the magic number, the protocol version, system info, then the object.
_LEGACY_PICKLES = 4


def _torn(path: Path | IO[bytes]) -> bool:
    """A legacy stream whose leading pickles do not parse to their end (cut off, or bytes overwritten)."""
    head = _head(path, _SCAN_BYTES)
    return len(head) < _SCAN_BYTES and _scan_pickles(head)[1] < _LEGACY_PICKLES


def _check_format(path: Path | IO[bytes]) -> str:
    """The file's kind; bytes that are no PyTorch file raise here, before torch (or trust) is involved."""
    head = _head(path, 512)
    kind = _kind(head)
    if kind == "other":
        what = "an empty file" if not head else "neither a zip archive nor a legacy torch.save stream"
        raise UnreadableFileError(f"{path}: not a readable PyTorch file ({what})")
    if kind == "pickle":
        unsafe = _unsafe_names(_head(path, _SCAN_BYTES))
        if unsafe:
            raise UnsafeFileError(
                f"{path}: a plain pickle, not a PyTorch file; refusing to unpickle {', '.join(unsafe[:3])}"
            )
        raise UnreadableFileError(
            f"{path}: a plain pickle, not a PyTorch file (torch.save writes a zip archive; save it with torch.save)"
        )
    return kind


def safe_torch_load(path: str | Path | IO[bytes], map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """Load a torch file with ``weights_only=True`` (numpy scalars/arrays/dtypes allowed).

    Raises :class:`UnsafeFileError` naming the file and the offending type when the file needs
    more, and :class:`UnreadableFileError` when it is no torch file at all. ``trust_pickle=True``
    falls back to full unpickling for such files, with a warning.
    """
    path = Path(path) if isinstance(path, str | Path) else path
    try:
        kind = _check_format(path)
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        with torch.serialization.safe_globals(_numpy_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise UnreadableFileError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None
        if kind == "legacy" and _torn(path):
            raise UnreadableFileError(
                f"{path}: not a readable PyTorch file (a torn or corrupt legacy stream)"
            ) from None
        offending = _offending_type(path, exc, kind)
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
