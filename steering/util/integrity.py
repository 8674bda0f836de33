"""Checksums beside cached files: a cache entry is verified on use, never trusted.

``<file>.sha256`` holds the SHA-256 of the file's bytes, written right after the file itself.
A mismatch means a corrupt or altered entry: the caller rebuilds it (with a warning).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".sha256"


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: str | Path) -> str:
    """Full SHA-256 (shares the per-process memo of :func:`steering.data.file_hash`)."""
    from steering.data.features import _file_hash

    stat = Path(path).stat()
    return _file_hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def write_checksum(path: str | Path, digest: str | None = None) -> None:
    """Record the file's checksum beside it (atomically)."""
    target = sidecar(path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text((digest or digest_file(path)) + "\n")
    tmp.replace(target)


def verify(path: str | Path, digest: str | None = None) -> bool | None:
    """True when the file matches its recorded checksum, False when not, None when none is recorded."""
    target = sidecar(path)
    if not target.is_file():
        return None
    recorded = target.read_text().strip()
    return recorded == (digest or digest_file(path))


def check_or_record(path: str | Path, what: str) -> bool:
    """Whether a cached file can be used: verified, or (older caches) recorded now; False means rebuild."""
    ok = verify(path)
    if ok is None:
        log.info("%s %s has no checksum yet; recording it", what, path)
        write_checksum(path)
        return True
    if not ok:
        log.warning("cached %s %s does not match its checksum (corrupt or altered): rebuilding it", what, path)
    return ok
