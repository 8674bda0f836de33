"""Reuse of configuration-independent work across the jobs of a sweep.

A :class:`SharedPassStore` keeps one :class:`SharedPass` per chunk of evaluated clips, keyed by
model, data, evaluated indices, chunking and the first steered block. Within one process (Hydra's
basic launcher runs every job of a sweep in one process) chunks stay in memory up to a byte
budget; across processes (joblib, Submitit) they are read from an on-disk cache written
atomically, one file per chunk, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from steering.engine.core import SharedPass
from steering.model.safe_load import safe_torch_load
from steering.util.integrity import digest_bytes, verify, write_checksum

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_MEMORY: OrderedDict[tuple[str, int], SharedPass] = OrderedDict()
_MEMORY_BYTES = {"used": 0}
MEMORY_BUDGET = int(os.environ.get("STEERING_MEMORY_CACHE_BYTES", 4 << 30))


def shared_key(**parts: object) -> str:
    """Stable hash of what the shared work depends on."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _nbytes(shared: SharedPass) -> int:
    tensors = [*shared.first.values(), *shared.baseline.values(), *shared.own_modulations.values(), shared.prefix]
    return sum(t.numel() * t.element_size() for t in tensors)


def _remember(key: tuple[str, int], shared: SharedPass) -> None:
    size = _nbytes(shared)
    if size > MEMORY_BUDGET:
        return
    _MEMORY[key] = shared
    _MEMORY_BYTES["used"] += size
    while _MEMORY_BYTES["used"] > MEMORY_BUDGET and _MEMORY:
        _, old = _MEMORY.popitem(last=False)
        _MEMORY_BYTES["used"] -= _nbytes(old)


def clear_memory() -> None:
    """Forget the in-process chunks (tests, or to free memory between unrelated sweeps)."""
    _MEMORY.clear()
    _MEMORY_BYTES["used"] = 0


class SharedPassStore:
    """Chunks of shared work for one key, from memory, disk, or computed on demand."""

    def __init__(self, key: str, cache_dir: str | Path | None, device: torch.device | str = "cpu") -> None:
        self.key = key
        self.dir = Path(cache_dir) / "shared" / key if cache_dir else None
        self.device = torch.device(device)
        self.hits = {"memory": 0, "disk": 0, "computed": 0}

    def _path(self, chunk: int) -> Path | None:
        return self.dir / f"chunk_{chunk:05d}.pt" if self.dir else None

    def get(self, chunk: int, compute: Callable[[], SharedPass]) -> SharedPass:
        mem_key = (self.key, chunk)
        if mem_key in _MEMORY:
            _MEMORY.move_to_end(mem_key)
            self.hits["memory"] += 1
            return _MEMORY[mem_key].to(self.device)
        path = self._path(chunk)
        if path is not None and path.is_file():
            try:
                data = path.read_bytes()
                if verify(path, digest_bytes(data)) is not True:
                    raise ValueError("missing or mismatching checksum (corrupt or altered)")
                shared = SharedPass.from_state(safe_torch_load(io.BytesIO(data), map_location=self.device))
                self.hits["disk"] += 1
                _remember(mem_key, shared)
                return shared
            except Exception as exc:  # a torn, stale or altered file is recomputed, never trusted
                log.warning("recomputing cache chunk %s: %s", path, exc)
        shared = compute()
        self.hits["computed"] += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save(shared.to("cpu").state(), buffer)
            data = buffer.getvalue()
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            write_checksum(path, digest_bytes(data))
            tmp.replace(path)
        _remember(mem_key, shared)
        return shared
