"""Reuse of configuration-independent work across the jobs of a sweep.

A :class:`SharedPassStore` keeps one :class:`SharedPass` per chunk of evaluated clips, keyed by
model, data, evaluated indices, chunking and the first steered block. Within one process (Hydra's
basic launcher runs every job of a sweep in one process) chunks stay in a :class:`ChunkMemory`
owned by the sweep, up to a byte budget; across processes (joblib, Submitit) they are read from an
on-disk cache (one checksummed file per chunk, steering.util.cache), so memory stays bounded by
the chunk size.
"""

from __future__ import annotations

import io
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from steering.engine.core import SharedPass
from steering.model.safe_load import safe_torch_load
from steering.util.cache import read_verified, write_verified
from steering.util.hashing import json_digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
MEMORY_ENV = "STEERING_MEMORY_CACHE_BYTES"
DEFAULT_MEMORY_BUDGET = 4 << 30


def shared_key(**parts: object) -> str:
    """Stable hash of what the shared work depends on."""
    return json_digest({"format": CACHE_FORMAT, **parts}, 20)


def _nbytes(shared: SharedPass) -> int:
    tensors = [*shared.first.values(), *shared.baseline.values(), *shared.own_modulations.values(), shared.prefix]
    return sum(t.numel() * t.element_size() for t in tensors)


class ChunkMemory:
    """Shared-work chunks kept in memory, least recently used first out, within a byte budget.

    One per sweep (held by its reuse object), so the jobs a launcher runs in one process share
    chunks and a new sweep starts empty. ``budget`` defaults to ``$STEERING_MEMORY_CACHE_BYTES``
    or 4 GiB.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_BUDGET)) if budget is None else int(budget)
        self._chunks: OrderedDict[tuple[str, int], SharedPass] = OrderedDict()
        self.used = 0

    def get(self, key: tuple[str, int]) -> SharedPass | None:
        shared = self._chunks.get(key)
        if shared is not None:
            self._chunks.move_to_end(key)
        return shared

    def put(self, key: tuple[str, int], shared: SharedPass) -> None:
        size = _nbytes(shared)
        if size > self.budget:
            return
        if key in self._chunks:
            self.used -= _nbytes(self._chunks.pop(key))
        self._chunks[key] = shared
        self.used += size
        while self.used > self.budget and self._chunks:
            _, old = self._chunks.popitem(last=False)
            self.used -= _nbytes(old)

    def clear(self) -> None:
        self._chunks.clear()
        self.used = 0

    def __len__(self) -> int:
        return len(self._chunks)


class SharedPassStore:
    """Chunks of shared work for one key, from memory, disk, or computed on demand.

    ``memory``: the sweep's :class:`ChunkMemory`; without one the store keeps its own (so a single
    run still computes each chunk once).
    """

    def __init__(
        self,
        key: str,
        cache_dir: str | Path | None,
        device: torch.device | str = "cpu",
        memory: ChunkMemory | None = None,
    ) -> None:
        self.key = key
        self.dir = Path(cache_dir) / "shared" / key if cache_dir else None
        self.device = torch.device(device)
        self.memory = memory if memory is not None else ChunkMemory()
        self.hits = {"memory": 0, "disk": 0, "computed": 0}

    def _path(self, chunk: int) -> Path | None:
        return self.dir / f"chunk_{chunk:05d}.pt" if self.dir else None

    def get(self, chunk: int, compute: Callable[[], SharedPass]) -> SharedPass:
        mem_key = (self.key, chunk)
        remembered = self.memory.get(mem_key)
        if remembered is not None:
            self.hits["memory"] += 1
            return remembered.to(self.device)
        path = self._path(chunk)
        shared = self._read(path) if path is not None else None
        if shared is not None:
            self.hits["disk"] += 1
        else:
            shared = compute()
            self.hits["computed"] += 1
            if path is not None:
                buffer = io.BytesIO()
                torch.save(shared.to("cpu").state(), buffer)
                write_verified(path, buffer.getvalue())
        self.memory.put(mem_key, shared)
        return shared

    def _read(self, path: Path) -> SharedPass | None:
        data = read_verified(path, "shared-work chunk")
        if data is None:
            return None
        try:
            return SharedPass.from_state(safe_torch_load(io.BytesIO(data), map_location=self.device))
        except Exception as exc:  # a stale or foreign file is recomputed, never trusted
            log.warning("recomputing cache chunk %s: %s", path, exc)
            return None
