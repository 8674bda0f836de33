"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every writer of results, caches and checkpoints goes through :func:`atomic_path`: it writes to a
temporary file in the same directory (so the final rename never crosses a file system), flushes it
to disk, then ``os.replace``-s it over the target. An error or Ctrl-C leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, same_name: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``, on failure it is removed.

    ``same_name``: the temporary file is ``<name>.tmp`` inside a private temporary folder, for writers
    that record the file's own name in its bytes (``torch.save`` names its zip archive after the
    file), so the result does not depend on the process or the moment it was written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name unique to this process and call, created by the writer itself (so with the usual permissions).
    unique = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    if same_name:
        unique.mkdir()
        tmp = unique / f"{path.name}{TMP_SUFFIX}"
    else:
        tmp = unique
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if same_name:
            unique.rmdir()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)
