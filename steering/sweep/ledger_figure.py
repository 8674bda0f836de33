"""``ledger.png``: what each run's intervention did, against strength (when it varies) or per configuration.

One panel per quantity of the intervention ledger (docs/model.md): the steered blocks' mean gain, the
share of channels the gain silences (<= 0) and more than doubles (> 2), the relative change of the
steered block's output and of the embedding against the baseline pass 2, and ``took_effect``. A null
Δr next to ``took_effect`` = 0 or an embedding change of 0 is an intervention that never reached the
output, not a steering direction without use.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from steering.sweep.columns import LEDGER_METRICS, varying_choices
from steering.sweep.figures import MARKERS, OKABE_ITO, FigureContext, _pyplot, _save, _strength_ticks, row_labels

#: Panels in order: (column, y label).
PANELS = (
    ("gain_mean", "mean gain (1 + m)"),
    ("gain_silenced_share", "share of channels silenced (gain ≤ 0)"),
    ("gain_doubled_share", "share of channels doubled (gain > 2)"),
    ("block_change", "steered block output: relative change"),
    ("embedding_change", "embedding: relative change"),
    ("took_effect", "took effect (1 = a prediction moved)"),
)


def ledger_figure(table: pd.DataFrame, path: str | Path, context: FigureContext | None = None) -> Path | None:
    """Draw ``ledger.png`` into ``path``; None when no finished row has the ledger's metrics."""
    fig = draw_ledger(table, context)
    return None if fig is None else _save(fig, path)


def draw_ledger(table: pd.DataFrame, context: FigureContext | None = None):
    """The ledger's run-level quantities, one panel each: lines over strength, else one point per row."""
    if not all(c in table for c in LEDGER_METRICS) or "status" not in table:
        return None
    data = table[table["status"] == "FINISHED"]
    data = data[data[list(LEDGER_METRICS)].notna().any(axis=1)]
    if data.empty:
        return None
    plt = _pyplot()
    context = context or FigureContext(sweep_id="")
    by_strength = "strength" in data and data["strength"].nunique(dropna=True) >= 2
    # Per row the configurations are named on a shared y axis (read across, like forest.png).
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharey=not by_strength)
    panels = list(axes.flat)
    handles = _draw_over_strength(panels, data) if by_strength else _draw_per_row(panels, data, context)
    for ax, (column, label) in zip(panels, PANELS):
        (ax.set_ylabel if by_strength else ax.set_xlabel)(label, fontsize=9)
        ax.grid(alpha=0.3)
        limits = ax.set_ylim if by_strength else ax.set_xlim
        if column in ("gain_silenced_share", "gain_doubled_share", "took_effect"):
            limits(-0.05, 1.05)
        if column == "gain_mean":  # gain 1: the block's output unchanged
            (ax.axhline if by_strength else ax.axvline)(1.0, color="black", lw=1, ls="--")
    question = "What did each intervention do to the steered blocks, the embedding and the predictions?"
    fig.suptitle(
        context.title(data, ["gain and block change: mean over the steered connections"], question), fontsize=10
    )
    if handles:
        fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=min(len(handles), 5),
                   fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.01))  # fmt: skip
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    return fig


def _draw_over_strength(axes, data: pd.DataFrame) -> list:
    """One line per configuration (the other varying choices) against strength (symlog, so s = 0 shows)."""
    group_keys = varying_choices(data, exclude=("strength",))
    groups = list(data.groupby(group_keys, dropna=False)) if group_keys else [((), data)]
    positive = data.loc[data["strength"] > 0, "strength"]
    linthresh = float(positive.min()) if len(positive) else 1.0
    handles = []
    for i, (key, group) in enumerate(groups):
        group = group.sort_values("strength")
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(group_keys, key)) or "runs"
        colour, marker = OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]
        for ax, (column, _) in zip(axes, PANELS):
            (line,) = ax.plot(group["strength"], group[column], marker=marker, color=colour, label=label)
        handles.append(line)
    ticks = _strength_ticks(data["strength"], linthresh)
    for ax in axes:
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.minorticks_off()
        ax.set_xlabel("strength (log scale above the smallest s > 0)")
    return handles


def _draw_per_row(axes, data: pd.DataFrame, context: FigureContext) -> list:
    """One point per row, the rows named on the shared y axis (the method, or whatever else the sweep varied)."""
    labels = row_labels(data, context.varied)
    y = list(range(len(data)))
    colours = [OKABE_ITO[i % len(OKABE_ITO)] for i in y]
    for ax, (column, _) in zip(axes, PANELS):
        ax.scatter(data[column], y, c=colours, marker="o", zorder=3)
    axes[0].set_yticks(y, labels)
    for ax in axes:
        ax.tick_params(axis="y", labelsize=8)
    axes[0].set_ylim(len(data) - 0.5, -0.5)  # the first row on top, as in the table
    return []
