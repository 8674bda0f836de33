"""Per-clip steerability of a strength sweep (Tan et al. 2024, "Analyzing the generalization and
reliability of steering vectors"): the least-squares slope of each clip's steered prediction against
the strength, per target and per group of the other varied choices.

Direction: a clip is moved the *right* way when its slope points from its baseline prediction
towards its rating (``slope * sign(rating - baseline) > 0``) and the *wrong* way when it points away
(``< 0``). ``toward_rating = slope * sign(rating - baseline)`` is the slope in that frame (positive =
towards the rating). Only steered clips count; a clip whose prediction changes by less than
``FLAT_CHANGE`` over the swept range, or whose baseline equals its rating, is neither (``flat``).
The slope is over the strengths as swept (a grid up to 10 weighs the large strengths most); a
multi-draw control's prediction is the mean over its draws.

A group whose predictions barely move between the positive strengths (summed over clips, by at most
``ties.STEP_FRACTION`` of their jump from s = 0) has a **step** response (``method=lrm``:
normalisation cancels s). Its least-squares slope measures the one jump from s = 0, not how the
prediction follows the strength, so the group is flagged (``response = step``) and its summary
speaks of the jump, not of a slope pointing the wrong way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from steering.sweep.columns import varying_choices
from steering.sweep.predictions import check_same_clips, steered_draws
from steering.sweep.ties import STEP_FRACTION
from steering.vocab import TARGETS

log = logging.getLogger(__name__)

#: Below this change of the prediction over the whole swept strength range a clip counts as not moved.
FLAT_CHANGE = 1e-6

Loader = Callable[[str], pd.DataFrame]


def slopes(strengths: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Least-squares slope of each column of ``predictions`` (strengths x clips) against ``strengths``."""
    s = np.asarray(strengths, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    sc = s - s.mean()
    return (sc[:, None] * (p - p.mean(axis=0))).sum(axis=0) / (sc * sc).sum()


def group_keys(table: pd.DataFrame) -> list[str]:
    """Choice columns other than strength that vary among the finished rows (one steerability group each)."""
    return varying_choices(table[table["status"] == "FINISHED"], exclude=("strength",))


def steerability_table(table: pd.DataFrame, load: Loader) -> pd.DataFrame:
    """One row per (group, target, clip): rating, baseline, slope, toward_rating, steered, wrong_way, flat."""
    if "strength" not in table:
        return pd.DataFrame()
    finished = table[(table["status"] == "FINISHED") & table["strength"].notna()]
    keys = group_keys(table)
    groups = finished.groupby(keys, dropna=False, sort=False) if keys else [((), finished)]
    frames = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        group = group.sort_values("strength")
        strengths = group["strength"].to_numpy(dtype=np.float64)
        if np.unique(strengths).size < 2:
            continue
        preds = [load(run_id) for run_id in group["run_id"]]
        check_same_clips(preds, list(group["run_id"]))
        span = float(strengths.max() - strengths.min())
        steered_mask = np.logical_or.reduce([p["steered"].astype(bool).to_numpy() for p in preds])
        for t in TARGETS:
            stacked = np.stack([steered_draws(p, t).mean(axis=0) for p in preds])
            slope = slopes(strengths, stacked)
            rating = preds[0][t].to_numpy(dtype=np.float64)
            base = preds[0][f"base_{t}"].to_numpy(dtype=np.float64)
            toward = slope * np.sign(rating - base)
            flat = (np.abs(slope) * span < FLAT_CHANGE) | (rating == base)
            response = "step" if _is_step(strengths, stacked) else "graded"
            frame = pd.DataFrame(
                {
                    "target": t,
                    "audio_name": preds[0]["audio_name"].to_numpy(),
                    "rating": rating,
                    "base": base,
                    "slope": slope,
                    "toward_rating": toward,
                    "steered": steered_mask,
                    "flat": flat,
                    "wrong_way": steered_mask & ~flat & (toward < 0),
                    "response": response,
                }
            )
            for k, v in reversed(list(zip(keys, key))):
                frame.insert(0, k, v)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _is_step(strengths: np.ndarray, predictions: np.ndarray) -> bool:
    """s = 0 and at least two s > 0, and the predictions move between the positive strengths by at most
    ``STEP_FRACTION`` of their jump from s = 0 (sums over clips)."""
    positive = strengths > 0
    if positive.sum() < 2 or positive.all():
        return False
    jump = np.abs(predictions[positive].mean(axis=0) - predictions[~positive].mean(axis=0)).sum()
    spread = np.ptp(predictions[positive], axis=0).sum()
    return bool(jump > FLAT_CHANGE and spread <= STEP_FRACTION * jump)


def summarise(steer: pd.DataFrame) -> pd.DataFrame:
    """Per group and target: steered clips, shares moved the right/wrong way or not at all, median slope."""
    if steer.empty:
        return pd.DataFrame()
    keys = list(steer.columns[: list(steer.columns).index("target") + 1])
    rows = []
    for key, g in steer.groupby(keys, dropna=False, sort=False):
        s = g[g["steered"]]
        n = len(s)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(
            n_clips=len(g),
            n_steered=n,
            share_wrong_way=float(s["wrong_way"].mean()) if n else np.nan,
            share_right_way=float((~s["flat"] & (s["toward_rating"] > 0)).mean()) if n else np.nan,
            share_flat=float(s["flat"].mean()) if n else np.nan,
            median_slope=float(s["slope"].median()) if n else np.nan,
            median_toward_rating=float(s["toward_rating"].median()) if n else np.nan,
            response=str(g["response"].iloc[0]) if "response" in g else "graded",
        )
        rows.append(row)
    return pd.DataFrame(rows)


def histogram(steer: pd.DataFrame, path: str | Path, scored: str = "") -> Path | None:
    """Histogram of ``toward_rating`` over steered clips, one panel per target, one outline per group;
    ``scored``: the split and n the rows were scored on, for the title."""
    if steer.empty or not steer["steered"].any():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = list(steer.columns[: list(steer.columns).index("target")])
    data = steer[steer["steered"]]
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(11, 4.2))
    for ax, t in zip(axes, TARGETS):
        sub = data[data["target"] == t]
        values = sub["toward_rating"].to_numpy()
        lo, hi = np.quantile(values, [0.005, 0.995]) if values.size else (0.0, 1.0)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        groups = sub.groupby(keys, dropna=False, sort=False) if keys else [((), sub)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            name = ", ".join(f"{k}={v}" for k, v in zip(keys, key)) or "clips"
            share = g["wrong_way"].mean()
            step = "response" in g and (g["response"] == "step").all()
            text = f"{name}: step, the slope is one jump from s = 0" if step else f"{name}: {share:.0%} wrong way"
            ax.hist(
                np.clip(g["toward_rating"], bins[0], bins[-1]),
                bins=bins,
                histtype="step",
                lw=1.4,
                label=text,
            )
        ax.axvline(0, color="grey", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)  # no offset text over the label
        ax.set_xlabel("slope towards the rating (per unit strength; < 0: wrong way)")
        ax.set_ylabel("steered clips")
        ax.set_title(t)
        ax.legend(fontsize=8, loc="best")
    question = "Does more strength move each clip towards its rating? Per-clip slope of the prediction against strength"
    fig.suptitle(question + (f"\n{scored}" if scored else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def describe_steerability(summary: pd.DataFrame) -> list[str]:
    """Markdown lines for comparison.md."""
    if summary.empty:
        return []
    keys = list(summary.columns[: list(summary.columns).index("target")])
    lines = [
        "## Steerability (per-clip slope against strength)",
        "",
        "Share of steered clips whose least-squares slope points away from their rating (wrong way), "
        "towards it (right way) or is flat (steerability.csv, steerability.png).",
        "",
    ]
    for _, row in summary.iterrows():
        where = ", ".join(f"{k}={row[k]}" for k in keys)
        if row.get("response") == "step":
            lines.append(
                f"- {where + ': ' if where else ''}{row['target']}: **step response** — every s > 0 gives about the "
                "same predictions, so a slope against strength measures only the jump from s = 0 (not summarised as "
                f"a slope; that jump moved {row['share_wrong_way']:.1%} of the {int(row['n_steered'])} steered "
                "clips away from their rating)"
            )
            continue
        lines.append(
            f"- {where + ': ' if where else ''}{row['target']}: {row['share_wrong_way']:.1%} wrong way, "
            f"{row['share_right_way']:.1%} right way, {row['share_flat']:.1%} flat "
            f"({int(row['n_steered'])} steered clips, median slope {row['median_slope']:+.4g})"
        )
    return lines
