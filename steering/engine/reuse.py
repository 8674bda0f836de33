"""Sibling reuse inside one sweep: steered predictions of every strength, computed in one forward.

Jobs of a sweep that differ only in ``strength`` share everything else, so the first of them
steers once for all the sweep's strengths and the others read their column. A :class:`SweepReuse`
is created per sweep by the app (which reads the sweep's strengths), never at module level of the
library, and passed down; its key is the hash of the WHOLE typed configuration except ``strength``
plus every input the steered predictions depend on, so no other field can be silently shared.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from steering.engine.store import ChunkMemory
from steering.util.hashing import config_hash, json_digest

log = logging.getLogger(__name__)

#: Steered predictions of one configuration: {strength: {target: (draws, N)}}.
ByStrength = dict[float, dict[str, np.ndarray]]


def reuse_key(config: Any, *content_hashes: str) -> str:
    """Key of a configuration family: the typed config minus ``strength`` (and volatile keys), plus inputs."""
    return config_hash(config, *content_hashes, exclude=("strength",))


def family_key(config_key: str, *content_hashes: str) -> str:
    """A family's key (:func:`reuse_key`) extended by what only the evaluation knows (signals, shared work)."""
    return json_digest([config_key, *content_hashes], 20)


class SweepReuse:
    """Steered predictions of the current sweep's configurations, at every strength the sweep asks for."""

    def __init__(self, strengths: Iterable[float] = (), max_entries: int = 64) -> None:
        self.strengths = tuple(sorted({float(s) for s in strengths}))
        self.max_entries = max_entries
        self._entries: OrderedDict[str, ByStrength] = OrderedDict()
        self.hits = 0
        self.memory = ChunkMemory()  # the sweep's shared-work chunks, for the jobs run in this process
        self._models: OrderedDict[tuple, Any] = OrderedDict()

    def model(self, key: tuple, load: Callable[[], Any], keep: int = 2) -> Any:
        """The model for ``key`` (checkpoint content hash, device, trust_pickle), loaded once per sweep.

        Sharing is safe because a job never changes its model: it is in eval mode, steering passes
        the gains as arguments (no hooks, no weight edits), and signal extraction puts device and
        mode back. ``keep`` bounds how many models stay in memory.
        """
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load()
        self._models[key] = model
        while len(self._models) > keep:
            self._models.popitem(last=False)
        return model

    def strengths_for(self, strength: float) -> list[float]:
        """The strengths to compute together when ``strength`` is not stored yet."""
        return sorted({float(strength), *self.strengths})

    def get(self, key: str, strength: float) -> dict[str, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None or float(strength) not in entry:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        log.info("steered predictions reused from a sibling job (strength %g)", strength)
        return entry[float(strength)]

    def put(self, key: str, by_strength: ByStrength) -> None:
        self._entries.setdefault(key, {}).update({float(s): v for s, v in by_strength.items()})
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
