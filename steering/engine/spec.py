"""What a steering configuration asks for: connections, method, strength, blend, priming."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from steering.engine.methods import METHODS
from steering.errors import SteeringError
from steering.model.lrm import Connection
from steering.vocab import PATHWAY_CHOICES, PATHWAYS


class SteeringConfigError(SteeringError, ValueError):
    """A steering configuration the model cannot carry out."""


@dataclass(frozen=True)
class SteeringSpec:
    """One steering configuration, independent of the signals it is fed."""

    connections: frozenset[Connection]
    method: str = "lrm"
    strength: float = 1.0
    alpha: float = 1.0
    priming: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SteeringConfigError(f"unknown method {self.method!r}; expected one of {tuple(METHODS)}")
        if not self.connections:
            raise SteeringConfigError("a steering configuration needs at least one connection")

    @property
    def pathways(self) -> tuple[str, ...]:
        return tuple(p for p in PATHWAYS if any(c.pathway == p for c in self.connections))

    @property
    def first_block(self) -> int:
        """0-based index of the earliest steered block: everything before it is shared work."""
        return min(c.block_index for c in self.connections)


def select_connections(available: Iterable[Connection], pathway: str, layer: str) -> frozenset[Connection]:
    """The model's connections for a pathway choice (valence, arousal, dual) and layer (convN or all).

    Every requested pathway must have a connection at the requested layer; otherwise the error
    names the pairs the model has, before any work is done.
    """
    available = tuple(available)
    if pathway not in PATHWAY_CHOICES:
        raise SteeringConfigError(f"unknown pathway {pathway!r}; expected one of {PATHWAY_CHOICES}")
    pathways = PATHWAYS if pathway == "dual" else (pathway,)
    chosen: set[Connection] = set()
    missing: list[str] = []
    for p in pathways:
        found = [c for c in available if c.pathway == p and (layer == "all" or c.layer == layer)]
        if not found:
            missing.append(f"{p}->{layer}")
        chosen.update(found)
    if missing:
        have = ", ".join(sorted(str(c) for c in available)) or "none"
        raise SteeringConfigError(
            f"the model has no connection {', '.join(missing)} (pathway={pathway}, layer={layer}); it has: {have}"
        )
    return frozenset(chosen)
