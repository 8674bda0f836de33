"""Steering toward a chosen emotion: how far the predictions moved toward the target category's centre.

With one fixed target category for every clip, Δr says whether the steered predictions agree
better with the ratings, not whether they went where they were sent. Given the target's centre
(the mean ratings of its training clips, chosen by the caller) and each clip's baseline and steered
prediction, per target t (valence, arousal):

- ``toward_target_t`` = mean over clips of |baseline − centre| − |steered − centre|, in rating
  units: positive when the predictions came closer to the centre on that axis, 0 when unsteered;
- ``toward_target_share``: the share of clips whose distance to the centre in the valence-arousal
  plane decreased by more than :data:`MOVE_TOLERANCE` (float noise is not a move);

each with a percentile interval (``_ci_low``, ``_ci_high``) over paired bootstrap resamples of the
clips: one set of resample indices (``steering.stats.metrics.bootstrap_indices``, the run's
``metrics.seed``, so the same clips as the run's Δr interval) scores baseline and steered together.
The centroids (mean prediction) before and after steering, with the centre, place the run on the
steering map (docs/statistics.md, "Steering toward a chosen emotion").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from steering.stats.metrics import bootstrap_indices, percentile_interval
from steering.vocab import TARGETS

#: A clip counts as moved toward the centre only when its distance shrank by more than this (rating
#: units): predictions are float32, and an unsteered prediction recomputed in another batch shape can
#: differ from the baseline in the 7th digit.
MOVE_TOLERANCE = 1e-6
#: Resamples x clips evaluated at once (bounds memory for large inputs).
_CHUNK = 4_000_000
SHARE = "toward_target_share"


def toward_target_column(target: str) -> str:
    """``toward_target_<target>``: the mean reduction of the distance to the centre on one axis."""
    return f"toward_target_{target}"


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, k) means of each column of ``values`` (n, k) over the run's paired resamples of the clips."""
    n = values.shape[0]
    idx = bootstrap_indices(n, resamples, seed)
    out = np.empty((resamples, values.shape[1]))
    step = max(1, _CHUNK // n)
    for start in range(0, resamples, step):
        out[start : start + step] = values[idx[start : start + step]].mean(axis=1)
    return out


def toward_target_metrics(
    centre: Mapping[str, float],
    base: Mapping[str, np.ndarray],
    steered: Mapping[str, np.ndarray],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """The toward-target statistics, their intervals and the centroids of one run (see the module docstring).

    ``centre``: {target: the target category's mean rating}; ``base`` and ``steered``: {target: (N,)}.
    When ``steered`` equals ``base`` every reduction, share and interval bound is exactly 0.
    """
    b = np.stack([np.asarray(base[t], dtype=np.float64).ravel() for t in TARGETS], axis=1)
    s = np.stack([np.asarray(steered[t], dtype=np.float64).ravel() for t in TARGETS], axis=1)
    c = np.array([float(centre[t]) for t in TARGETS])
    if b.shape != s.shape:
        raise ValueError(f"base and steered must have the same length, got {b.shape[0]} and {s.shape[0]}")
    reduction = np.abs(b - c) - np.abs(s - c)  # (N, targets): positive = closer on that axis
    moved = np.linalg.norm(s - c, axis=1) < np.linalg.norm(b - c, axis=1) - MOVE_TOLERANCE
    per_clip = np.column_stack([reduction, moved.astype(np.float64)])
    names = [*(toward_target_column(t) for t in TARGETS), SHARE]
    out: dict[str, float] = {}
    n = per_clip.shape[0]
    estimates = per_clip.mean(axis=0) if n else np.full(len(names), math.nan)
    samples = _bootstrap_means(per_clip, resamples, seed) if n and resamples > 0 else None
    for j, name in enumerate(names):
        low, high = percentile_interval(samples[:, j], confidence) if samples is not None else (math.nan, math.nan)
        out.update({name: float(estimates[j]), f"{name}_ci_low": low, f"{name}_ci_high": high})
    for j, t in enumerate(TARGETS):
        out[f"target_centre_{t}"] = float(c[j])
        out[f"base_centroid_{t}"] = float(b[:, j].mean()) if n else math.nan
        out[f"steered_centroid_{t}"] = float(s[:, j].mean()) if n else math.nan
    return out


def describe(target: str, metrics: Mapping[str, float]) -> str:
    """One line for the run summary: ``toward <target>: valence +x [lo, hi], arousal ..., share y% ...``."""

    def axis(t: str) -> str:
        name = toward_target_column(t)
        return f"{t} {metrics[name]:+.4f} [{metrics[f'{name}_ci_low']:+.4f}, {metrics[f'{name}_ci_high']:+.4f}]"

    share = f"{metrics[SHARE]:.0%} [{metrics[f'{SHARE}_ci_low']:.0%}, {metrics[f'{SHARE}_ci_high']:.0%}]"
    return f"toward {target}: {', '.join(axis(t) for t in TARGETS)}, share {share} of clips moved toward it"
