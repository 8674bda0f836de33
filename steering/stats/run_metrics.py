"""A run's metrics from its predictions, for one signal draw or the mean over several.

Single-draw modes log exactly :func:`steering.stats.metrics.target_metrics`. Multi-draw controls
(``random``, ``shuffled``) report the mean over draws of every per-draw statistic, so that
``dr_t = r_steered_t - r_base_t`` still holds, plus the spread of Δr over draws
(``dr_t_draws_sd``, ``_min``, ``_max``). Their interval and p-value are those of the draw-mean Δr:
a paired bootstrap over clips in which every resample scores all draws on the same clips (the
draws are held fixed: the question is whether the control, as drawn, changes r), the percentile
interval, and the two-sided bootstrap p that inverts it, ``2 min(P*(d <= 0), P*(d >= 0))`` with
the (k + 1) / (R + 1) correction: the family p (:mod:`steering.stats.family`), as for a single draw.
Williams' t and Zou's interval concern one pair of correlations, so they are not reported for
multi-draw runs.
"""

from __future__ import annotations

import math

import numpy as np

from steering.engine.core import TARGETS
from steering.stats.family import family_p, family_p_column
from steering.stats.metrics import bootstrap_dr_samples, pearson, percentile_interval, target_metrics

#: Per-draw statistics averaged over draws (the Δr itself is handled separately).
_AVERAGED = ("r_steered", "ccc_steered", "mae_steered", "shift")


def _extra_metrics(t: str, y: np.ndarray, base: np.ndarray, steered: np.ndarray, mask: np.ndarray) -> dict:
    """``improved_share_t`` over steered clips; ``dr_t_steered_only`` when some clips are unsteered."""
    out: dict[str, float] = {}
    if mask.any():
        improved = np.abs(steered[mask] - y[mask]) < np.abs(base[mask] - y[mask])
        out[f"improved_share_{t}"] = float(improved.mean())
    if not mask.all() and mask.sum() >= 3:
        dr = pearson(steered[mask], y[mask]) - pearson(base[mask], y[mask])
        if math.isfinite(dr):
            out[f"dr_{t}_steered_only"] = dr
    return out


def run_metrics(
    ratings: dict[str, np.ndarray],
    base: dict[str, np.ndarray],
    steered: dict[str, np.ndarray],
    masks: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, float]:
    """Metrics of both targets; ``steered[t]`` and ``masks`` are (draws, N)."""
    draws = masks.shape[0]
    metrics: dict[str, float] = {}
    for t in TARGETS:
        y, b = ratings[t], base[t]
        if draws == 1:
            metrics.update(
                target_metrics(
                    y, b, steered[t][0], prefix_target=t, resamples=resamples, confidence=confidence, seed=seed
                )
            )
            metrics.update(_extra_metrics(t, y, b, steered[t][0], masks[0]))
            continue
        per_draw = [target_metrics(y, b, s, prefix_target=t, resamples=0) for s in steered[t]]
        dr = np.array([d[f"dr_{t}"] for d in per_draw])
        metrics.update({k: v for k, v in per_draw[0].items() if k.startswith(("r_base", "ccc_base", "mae_base"))})
        for stat in _AVERAGED:
            metrics[f"{stat}_{t}"] = float(np.mean([d[f"{stat}_{t}"] for d in per_draw]))
        metrics[f"dr_{t}"] = float(dr.mean())
        metrics[f"dr_{t}_draws_sd"] = float(dr.std(ddof=1))
        metrics[f"dr_{t}_draws_min"] = float(dr.min())
        metrics[f"dr_{t}_draws_max"] = float(dr.max())
        if all(np.array_equal(s, b) for s in steered[t]):
            metrics.update({f"dr_{t}_ci_low": 0.0, f"dr_{t}_ci_high": 0.0, family_p_column(t): 1.0})
        else:
            # The same seed gives every draw the same resampled clips: a paired bootstrap of the mean.
            boot = np.mean([bootstrap_dr_samples(y, b, s, resamples, seed) for s in steered[t]], axis=0)
            low, high = percentile_interval(boot, confidence)
            p = family_p(y, b, steered[t], boot, resamples, seed)
            metrics.update({f"dr_{t}_ci_low": low, f"dr_{t}_ci_high": high, family_p_column(t): p})
        extras = [_extra_metrics(t, y, b, s, m) for s, m in zip(steered[t], masks)]
        for name in extras[0]:
            metrics[name] = float(np.mean([e[name] for e in extras if name in e]))
    return metrics


#: How far a steered prediction may lie outside the reference range (the evaluated clips' ratings and
#: baseline predictions together), in widths of that range, before the run counts as implausible.
#: No emotion estimate is a million widths off its scale; untrained (random-weight) models steered
#: with ``bypass`` already reach 10^3 widths at strength 1, which the limit leaves alone, while extreme
#: strengths blow far past it (strength 1e30: ~10^25; docs/reliability.md).
PLAUSIBLE_WIDTHS = 1e6


def implausible_predictions(predictions, widths: float = PLAUSIBLE_WIDTHS) -> str | None:
    """What is implausible about a run's steered predictions, or None.

    A steered prediction more than ``widths`` range-widths outside the range spanned by the ratings
    and the baseline predictions of the same target (ratings and baseline in [-1, 1]: beyond
    ±2,000,001) is no emotion estimate any more: an extreme strength has pushed the model far
    off its scale, where a Pearson r measures float rounding (``method=bypass strength=1e30``
    shifted predictions by ~1e25 and still reported a gain). ``predictions``: the run's
    ``predictions.csv`` table.
    """
    found = []
    for t in TARGETS:
        reference = np.concatenate([np.asarray(predictions[c], float) for c in (t, f"base_{t}") if c in predictions])
        columns = [c for c in predictions.columns if c == f"steered_{t}" or c.startswith(f"steered_{t}_draw")]
        if not reference.size or not columns:
            continue
        low, high = float(np.min(reference)), float(np.max(reference))
        margin = widths * max(high - low, 1e-6)
        steered = np.concatenate([np.asarray(predictions[c], float) for c in columns])
        worst = float(steered[np.argmax(np.abs(steered - (low + high) / 2))])
        if worst < low - margin or worst > high + margin:
            found.append(f"steered_{t} reaches {worst:.3g}, outside [{low - margin:.3g}, {high + margin:.3g}]")
    if not found:
        return None
    return (
        f"implausible predictions: {'; '.join(found)} ({widths:g} widths beyond the ratings and baseline "
        "predictions; an extreme strength or signal pushes the model off its scale)"
    )
