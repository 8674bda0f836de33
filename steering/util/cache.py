"""One checksummed cache: every cached file is verified on use, never trusted.

``<file>.sha256`` holds the SHA-256 of the file's bytes, written right after the file itself (both
atomically). A missing or mismatching checksum means a torn, corrupt or altered entry: the caller
rebuilds it with a warning. Caches written before checksums existed can be accepted once
(``unrecorded="record"``): their checksum is recorded then, and verified from then on.

Used by the shared-work store, the signal cache, the random control's activation cache and the
demo's feature file and model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from steering.util.files import atomic_write_bytes, atomic_write_text
from steering.util.hashing import bytes_digest, file_digest

log = logging.getLogger(__name__)

SUFFIX = ".sha256"
T = TypeVar("T")
Unrecorded = Literal["rebuild", "record"]


def sidecar(path: str | Path) -> Path:
    """Where the checksum of ``path`` is kept."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def record_checksum(path: str | Path, digest: str | None = None) -> None:
    """Record the file's checksum beside it (``digest`` when already known)."""
    atomic_write_text(sidecar(path), (digest or file_digest(path)) + "\n")


def _recorded(path: Path) -> str | None:
    target = sidecar(path)
    return target.read_text().strip() if target.is_file() else None


def _accept(path: Path, what: str, digest: Callable[[], str], unrecorded: Unrecorded) -> bool:
    recorded = _recorded(path)
    if recorded is None:
        if unrecorded == "record":
            log.info("%s %s has no checksum yet; recording it", what, path)
            record_checksum(path, digest())
            return True
        log.warning("cached %s %s has no checksum (torn or foreign): rebuilding it", what, path)
        return False
    if recorded != digest():
        log.warning("cached %s %s does not match its checksum (corrupt or altered): rebuilding it", what, path)
        return False
    return True


def verify_file(path: str | Path, what: str, unrecorded: Unrecorded = "rebuild") -> bool:
    """Whether the cached file at ``path`` (read by its users by path) can be used; False means rebuild."""
    path = Path(path)
    return path.is_file() and _accept(path, what, lambda: file_digest(path), unrecorded)


def read_verified(path: str | Path, what: str, unrecorded: Unrecorded = "rebuild") -> bytes | None:
    """The file's bytes, read once, when they match the checksum; None (with a warning) otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    return data if _accept(path, what, lambda: bytes_digest(data), unrecorded) else None


def write_verified(path: str | Path, data: bytes) -> Path:
    """Write ``data`` and its checksum, each atomically."""
    atomic_write_bytes(path, data)
    record_checksum(path, bytes_digest(data))
    return Path(path)


def load_or_build(
    path: str | Path | None,
    what: str,
    *,
    decode: Callable[[bytes], T],
    encode: Callable[[T], bytes],
    build: Callable[[], T],
    unrecorded: Unrecorded = "rebuild",
) -> tuple[T, bool]:
    """The cached value at ``path`` if verified and decodable, else ``build()``'s, cached first.

    Returns ``(value, from_cache)``. ``path=None`` turns caching off. A file that passes its
    checksum but cannot be decoded (a stale format) is rebuilt with a warning too.
    """
    if path is None:
        return build(), False
    data = read_verified(path, what, unrecorded)
    if data is not None:
        try:
            return decode(data), True
        except Exception as exc:  # a stale or foreign file is rebuilt, never trusted
            log.warning("rebuilding unreadable cached %s %s: %s", what, path, exc)
    value = build()
    write_verified(path, encode(value))
    return value, False
