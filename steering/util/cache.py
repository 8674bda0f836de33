"""One keyed, checksummed cache: every cached file is verified on use, never trusted.

``<file>.sha256`` holds ``hmac-sha256 <hex>``: an HMAC-SHA256 of the entry's content key (its
folder and file name, which carry the hash of its inputs) and its bytes, under a secret of the user
(:func:`secret`), written right after the file itself (both atomically). A missing or mismatching
record means a torn, corrupt or altered entry: the caller rebuilds it with a warning. Because the
secret is not in the cache, rewriting an entry and its ``.sha256`` together (a forged checksum)
no longer passes, nor does copying a valid entry under another entry's name.

The secret is 32 random bytes in ``$STEERING_CACHE_KEY`` (a file path; default
``~/.config/steering/cache.key``, created on first use, readable by the user only). A team sharing
one cache directory points every member at one key file; where none can be created, entries are
checked for corruption only (with a warning). Caches written before checksums existed, or with
the older unkeyed checksum, can be accepted once (``unrecorded="record"``, the demo's files):
their record is written then, and verified from then on.

Used by the shared-work store, the signal cache, the random control's activation cache and the
demo's feature file and model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, TypeVar

from steering.util.files import atomic_write_bytes, atomic_write_text
from steering.util.hashing import bytes_digest, file_digest

log = logging.getLogger(__name__)

SUFFIX = ".sha256"
KEY_ENV = "STEERING_CACHE_KEY"
SCHEME = "hmac-sha256"
T = TypeVar("T")
Unrecorded = Literal["rebuild", "record"]


# --------------------------------------------------------------------------- the secret
def key_file() -> Path:
    """Where the cache secret lives: ``$STEERING_CACHE_KEY``, else ``~/.config/steering/cache.key``."""
    configured = os.environ.get(KEY_ENV)
    if configured:
        return Path(configured).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "steering" / "cache.key"


def secret() -> bytes:
    """The user's cache secret, created on first use (concurrent first uses agree on one)."""
    path = key_file()
    with contextlib.suppress(OSError, ValueError):
        return bytes.fromhex(path.read_text().strip())
    try:
        return _create_secret(path)
    except OSError as exc:
        _warn_no_key(str(path), exc.strerror or str(exc))
        return b""


@functools.cache
def _warn_no_key(path: str, reason: str) -> None:
    """Once per process and key path."""
    log.warning("no cache key at %s (%s): caches are checked for corruption only, not tampering", path, reason)


def _create_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made one first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


# --------------------------------------------------------------------------- keyed checksums
def sidecar(path: str | Path) -> Path:
    """Where the checksum of ``path`` is kept."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def content_key(path: Path) -> str:
    """The name an entry is keyed to: its folder and file name (where caches put their input hash)."""
    return f"{path.parent.name}/{path.name}"


def _keyed(key: str, chunks: Iterable[bytes]) -> str:
    mac = hmac.new(secret(), key.encode() + b"\0", hashlib.sha256)
    for chunk in chunks:
        mac.update(chunk)
    return f"{SCHEME} {mac.hexdigest()}"


def _keyed_file(path: Path) -> str:
    stat = path.stat()
    return _keyed_file_cached(str(path.resolve()), content_key(path), stat.st_size, stat.st_mtime_ns, secret())


@functools.lru_cache(maxsize=64)
def _keyed_file_cached(resolved: str, key: str, _size: int, _mtime_ns: int, _secret: bytes) -> str:
    """Remembered per process while the file is unchanged, so a sweep's jobs do not re-read it each."""
    with open(resolved, "rb") as fh:
        return _keyed(key, iter(lambda: fh.read(1 << 20), b""))


def record_checksum(path: str | Path, data: bytes | None = None) -> None:
    """Record the file's keyed checksum beside it (of ``data``, its bytes, when already in memory)."""
    path = Path(path)
    atomic_write_text(
        sidecar(path), (_keyed(content_key(path), [data]) if data is not None else _keyed_file(path)) + "\n"
    )


def _recorded(path: Path) -> str | None:
    target = sidecar(path)
    return target.read_text().strip() if target.is_file() else None


def _accept(path: Path, what: str, keyed: Callable[[], str], plain: Callable[[], str], unrecorded: Unrecorded) -> bool:
    recorded = _recorded(path)
    if recorded is not None and recorded.startswith(SCHEME + " "):
        if hmac.compare_digest(recorded, keyed()):
            return True
        log.warning("cached %s %s does not match its checksum (corrupt or altered): rebuilding it", what, path)
        return False
    if unrecorded == "record" and (recorded is None or hmac.compare_digest(recorded, plain())):
        log.info("%s %s has no keyed checksum yet; recording it", what, path)
        atomic_write_text(sidecar(path), keyed() + "\n")
        return True
    reason = "no checksum (torn or foreign)" if recorded is None else "an unkeyed or foreign checksum"
    log.warning("cached %s %s has %s: rebuilding it", what, path, reason)
    return False


def verify_file(path: str | Path, what: str, unrecorded: Unrecorded = "rebuild") -> bool:
    """Whether the cached file at ``path`` (read by its users by path) can be used; False means rebuild."""
    path = Path(path)
    return path.is_file() and _accept(path, what, lambda: _keyed_file(path), lambda: file_digest(path), unrecorded)


def read_verified(path: str | Path, what: str, unrecorded: Unrecorded = "rebuild") -> bytes | None:
    """The file's bytes, read once, when they match the checksum; None (with a warning) otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    accepted = _accept(path, what, lambda: _keyed(content_key(path), [data]), lambda: bytes_digest(data), unrecorded)
    return data if accepted else None


def write_verified(path: str | Path, data: bytes) -> Path:
    """Write ``data`` and its keyed checksum, each atomically."""
    atomic_write_bytes(path, data)
    record_checksum(path, data)
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
