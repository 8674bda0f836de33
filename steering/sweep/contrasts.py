"""Condition-minus-control contrasts of a ``controls`` sweep, with a paired bootstrap over clips.

Each condition (a category mode whose declared role is ``condition``: ``oracle``, ``predicted``,
``fixed``) is compared with each control (role ``control``: ``shuffled``, ``random``, ``mean``; see
``steering.engine.categories``) that ran with the same other choices:

    contrast = Δr(condition) - Δr(control),   Δr = r(steered, y) - r(baseline, y)

Both runs scored the same clips, so one set of bootstrap resamples of the clips is applied to both
runs (and to every draw of a multi-draw control, whose Δr is the mean over its draws). The interval
is the percentile interval of the resampled contrasts; the p-value is the two-sided bootstrap p
``min(1, 2 (1 + min(#{c* <= 0}, #{c* >= 0})) / (1 + B))`` over the B resamples where every correlation
is defined — the smallest level at which the percentile interval would exclude 0. ``p_holm`` and ``q``
adjust those p-values over the contrasts of the table (their own family).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from steering.engine.categories import CATEGORY_MODES
from steering.stats.metrics import bootstrap_dr_samples, pearson
from steering.stats.multiplicity import benjamini_hochberg, holm
from steering.sweep.columns import choice_columns
from steering.sweep.predictions import check_same_clips, steered_draws
from steering.vocab import TARGETS

log = logging.getLogger(__name__)

Loader = Callable[[str], pd.DataFrame]


def _labels(finished: pd.DataFrame) -> pd.Series:
    """Each row's category as the contrasts name it: ``fixed:<target>`` for a mode that needs a target."""
    labels = finished["category"].astype(str)
    if "category.target" in finished:
        targeted = labels.map(lambda name: name in CATEGORY_MODES and "target" in CATEGORY_MODES[name].needs)
        labels = labels.where(~targeted, labels + ":" + finished["category.target"].astype(str))
    return labels


def _role(labels: pd.Series) -> pd.Series:
    """Each label's declared role (``condition``/``control``); empty for a category no mode declares."""
    return labels.str.split(":").str[0].map(lambda name: CATEGORY_MODES[name].role if name in CATEGORY_MODES else "")


def bootstrap_p(samples: np.ndarray) -> float:
    """Two-sided bootstrap p of H0: the statistic is 0 (see the module docstring); nan without samples."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan
    tail = min(int((samples <= 0).sum()), int((samples >= 0).sum()))
    return float(min(1.0, 2 * (1 + tail) / (1 + samples.size)))


def _dr_and_samples(pred: pd.DataFrame, target: str, resamples: int, seed: int) -> tuple[float, np.ndarray, int]:
    """Δr (mean over draws), its bootstrap resamples (same clip indices for every run: same seed and n), draws."""
    y = pred[target].to_numpy(dtype=np.float64)
    base = pred[f"base_{target}"].to_numpy(dtype=np.float64)
    draws = steered_draws(pred, target)
    r_base = pearson(base, y)
    dr = float(np.mean([pearson(d, y) - r_base for d in draws]))
    samples = np.mean([bootstrap_dr_samples(y, base, d, resamples, seed) for d in draws], axis=0)
    return dr, samples, len(draws)


def contrasts_table(
    table: pd.DataFrame,
    load: Loader,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (other choices, target, condition, control) present among the table's FINISHED rows.

    ``load(run_id)`` returns a run's predictions. Empty when the table has no ``category`` column or
    no condition/control pair.
    """
    columns = ["target", "condition", "control", "dr_condition", "dr_control", "contrast", "ci_low", "ci_high", "p"]
    columns += ["control_draws", "n_clips", "resamples", "condition_run_id", "control_run_id"]
    if "category" not in table:
        return pd.DataFrame(columns=columns)
    finished = table[table["status"] == "FINISHED"].copy()
    finished["_label"] = _labels(finished)
    keys = [c for c in choice_columns(table) if not c.startswith("category")]
    groups = finished.groupby(keys, dropna=False, sort=False) if keys else [((), finished)]
    rows: list[dict[str, object]] = []
    alpha = (1 - confidence) / 2
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        role = _role(group["_label"])
        conditions, controls = group[role == "condition"], group[role == "control"]
        if conditions.empty or controls.empty:
            continue
        involved = pd.concat([conditions, controls])
        preds = {run_id: load(run_id) for run_id in involved["run_id"]}
        check_same_clips(list(preds.values()), list(preds))
        for t in TARGETS:
            stats = {run_id: _dr_and_samples(p, t, resamples, seed) for run_id, p in preds.items()}
            for cond in conditions.to_dict("records"):
                for ctrl in controls.to_dict("records"):
                    dr_a, s_a, _ = stats[cond["run_id"]]
                    dr_b, s_b, draws = stats[ctrl["run_id"]]
                    diff = s_a - s_b
                    finite = diff[np.isfinite(diff)]
                    low, high = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (math.nan, math.nan)
                    row: dict[str, object] = dict(zip(keys, key))
                    row.update(
                        target=t,
                        condition=cond["_label"],
                        control=ctrl["_label"],
                        dr_condition=dr_a,
                        dr_control=dr_b,
                        contrast=dr_a - dr_b,
                        ci_low=float(low),
                        ci_high=float(high),
                        p=bootstrap_p(diff),
                        control_draws=draws,
                        n_clips=len(preds[cond["run_id"]]),
                        resamples=int(finite.size),
                        condition_run_id=cond["run_id"],
                        control_run_id=ctrl["run_id"],
                    )
                    rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, *columns])
    if not out.empty:  # the contrasts are a family of their own
        finite = out["p"].notna()
        out.loc[finite, "p_holm"] = holm(out.loc[finite, "p"].to_numpy())
        out.loc[finite, "q"] = benjamini_hochberg(out.loc[finite, "p"].to_numpy())
        at = list(out.columns).index("p") + 1
        out = out[[*out.columns[:at], "p_holm", "q", *[c for c in out.columns[at:] if c not in ("p_holm", "q")]]]
    return out


def bootstrap_settings(params: Mapping[str, str]) -> dict[str, float | int]:
    """resamples/confidence/seed of a run's ``metrics.*`` params (the sweep's own bootstrap settings)."""
    return {
        "resamples": int(float(params.get("metrics.bootstrap_resamples", 2000))),
        "confidence": float(params.get("metrics.confidence", 0.95)),
        "seed": int(float(params.get("metrics.seed", 0))),
    }


def describe_contrasts(contrasts: pd.DataFrame, confidence: float = 0.95) -> list[str]:
    """Markdown lines for comparison.md."""
    if contrasts.empty:
        return []
    lines = [
        "## Contrasts (condition − control)",
        "",
        f"Δr(condition) − Δr(control) on the same clips, paired-bootstrap {confidence:.0%} interval and "
        "two-sided bootstrap p (contrasts.csv); a multi-draw control counts as the mean over its draws. "
        f"Holm and BH adjust over these {len(contrasts)} contrasts (a family separate from the table's).",
        "",
    ]
    keys = [k for k in contrasts.columns[: list(contrasts.columns).index("target")] if contrasts[k].nunique() > 1]
    for _, row in contrasts.iterrows():
        where = ", ".join(f"{k}={row[k]}" for k in keys)
        lines.append(
            f"- {where + ': ' if where else ''}{row.target}: {row.condition} − {row.control} = {row.contrast:+.4f} "
            f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}], p = {row.p:.3g} (Holm {row.p_holm:.3g}, BH q {row.q:.3g})"
        )
    return lines
