"""How a run's signals are made: ``signals.method``, ``signals.labels`` and what the result depends on.

A recipe is plain data (no model, no files): the run builds it from its config, the cache keys the
signals on it (:func:`steering.signals.cache.cache_key`), and the signal file records it, so two
runs share cached signals exactly when they would compute the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steering.config.schema import OptimizeConf


def optimize_dict(settings: OptimizeConf) -> dict[str, Any]:
    """``signals.optimize`` as plain values, for cache keys and signal files."""
    return {
        "steps": int(settings.steps),
        "step_sizes": [float(s) for s in settings.step_sizes],
        "patience": int(settings.patience),
        "holdout": float(settings.holdout),
    }


@dataclass(frozen=True)
class SignalRecipe:
    """What the signals are computed with, beyond checkpoint, data, split and binning.

    ``steering``: for ``optimized`` the steering configuration the fit runs through (method,
    connections, strength, alpha as plain values), since the fitted vectors depend on it.
    """

    method: str = "mean"
    labels: str = "observed"
    seed: int = 0
    optimize: OptimizeConf = field(default_factory=OptimizeConf)
    steering: Mapping[str, Any] | None = None

    @property
    def plain(self) -> bool:
        """Category means of the observed ratings: the signals every earlier version made (``knn`` starts
        from them too)."""
        return self.method in ("mean", "knn") and self.labels == "observed"

    @property
    def fitted(self) -> bool:
        return self.method == "optimized"

    def key(self) -> dict[str, Any] | None:
        """What the result depends on beyond the plain signals' key; None for plain signals, whose cache
        key stays as it was (existing caches still hit)."""
        if self.plain:
            return None
        out: dict[str, Any] = {"method": "optimized" if self.fitted else "mean", "labels": self.labels}
        if self.labels == "permuted" or self.fitted:  # the seed draws the permutation and the held-out clips
            out["seed"] = int(self.seed)
        if self.fitted:
            out["optimize"] = optimize_dict(self.optimize)
            out["steering"] = dict(self.steering or {})
        return out

    def describe(self) -> dict[str, Any]:
        """The recipe for a signal file's ``generation_config``."""
        out: dict[str, Any] = {"method": self.method, "labels": self.labels, "seed": int(self.seed)}
        if self.fitted:
            out["optimize"] = optimize_dict(self.optimize)
            out["steering"] = dict(self.steering or {})
        return out
