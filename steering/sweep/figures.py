"""Figures of a sweep's comparison table: Δr against strength, or a forest plot when strength is fixed.

Both use the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies) plus
distinct markers, mark the baseline Δr = 0 and carry a title that states the question the figure
answers, the split the rows were scored on with n, and the sweep. The strength figure says in the
panel when a response is flat or a step (steering.sweep.ties); the forest plot of a sweep with
contrasts (the ``controls`` preset) adds the condition − control contrasts with their intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from steering.sweep.columns import varying_choices
from steering.vocab import TARGETS

#: Okabe & Ito (2008), yellow last (weak on white).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class FigureContext:
    """What a figure's title says about the sweep; ``fixed`` holds choices that are the same in every row."""

    sweep_id: str
    preset: str | None = None
    varied: Sequence[str] = ()
    fixed: Mapping[str, str] = field(default_factory=dict)
    #: steering.sweep.ties.Shape per group and target (flat and step responses are marked in the panels).
    shapes: Sequence[Any] = ()
    #: contrasts.csv's rows (condition − control), drawn under the forest plot.
    contrasts: pd.DataFrame | None = None

    def title(self, table: pd.DataFrame, extra: Sequence[str] = (), question: str = "") -> str:
        head = f"{self.preset or 'sweep'} · {self.sweep_id} · {scored(table)}"
        if question:
            head = f"{question}\n{head}"
        parts = list(extra)
        if "method" in self.fixed:
            parts.insert(0, f"method {self.fixed['method']}")
        oracle = table.get("oracle", pd.Series(dtype=str)).astype(str).str.lower()
        if (oracle == "true").all() and len(oracle):
            parts.append("oracle signals (chosen from the evaluated samples' ratings)")
        elif (oracle == "true").any():
            parts.append("some rows use oracle signals")
        else:
            parts.append("no oracle")
        return head + "\n" + " · ".join(parts)


def scored(table: pd.DataFrame) -> str:
    """``scored on val, n = 182 clips`` from the rows' ``eval_split`` and ``n_eval`` (what is recorded)."""
    finished = table[table["status"] == "FINISHED"] if "status" in table else table
    splits = sorted({str(v) for v in finished.get("eval_split", pd.Series(dtype=object)).dropna() if str(v)})
    counts = sorted({int(v) for v in pd.to_numeric(finished.get("n_eval", pd.Series(dtype=float))).dropna()})
    text = f"scored on {', '.join(splits)}" if splits else "split not recorded"
    if counts:
        text += f", n = {counts[0]} clips" if len(counts) == 1 else f", n = {counts[0]}–{counts[-1]} clips"
    return text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def strength_figure(table: pd.DataFrame, path: str | Path, context: FigureContext | None = None) -> Path | None:
    """``strength_response.png`` (see :func:`draw_strength`), or None when strength does not vary."""
    fig = draw_strength(table, context)
    return None if fig is None else _save(fig, path)


def forest_figure(table: pd.DataFrame, path: str | Path, context: FigureContext | None = None) -> Path | None:
    """``forest.png`` (see :func:`draw_forest`), or None when strength varies."""
    fig = draw_forest(table, context)
    return None if fig is None else _save(fig, path)


def draw_strength(table: pd.DataFrame, context: FigureContext | None = None):
    """Δr against strength with 95% CI bands, one panel per target, one line per other configuration.

    The strength axis is symlog so that s = 0 can be shown: s = 0 is drawn as its own point with an
    error bar, and lines and bands join only positive strengths (never across the linear-to-log gap).
    """
    if "strength" not in table or table["strength"].nunique(dropna=True) < 2:
        return None
    plt = _pyplot()
    context = context or FigureContext(sweep_id="")
    data = table[table["status"] == "FINISHED"].dropna(subset=["strength"])
    positive = data.loc[data["strength"] > 0, "strength"]
    linthresh = float(positive.min()) if len(positive) else 1.0
    group_keys = varying_choices(data, exclude=("strength",))
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(11, 4.6), sharex=True)
    groups = list(data.groupby(group_keys, dropna=False)) if group_keys else [((), data)]
    handles = []
    for i, (key, group) in enumerate(groups):
        group = group.sort_values("strength")
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(group_keys, key)) or "Δr with 95% CI"
        colour, marker = OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]
        zero, pos = group[group["strength"] <= 0], group[group["strength"] > 0]
        for ax, t in zip(axes, TARGETS):
            (line,) = ax.plot(pos["strength"], pos[f"dr_{t}"], marker=marker, color=colour, label=label)
            ax.fill_between(pos["strength"], pos[f"dr_{t}_ci_low"], pos[f"dr_{t}_ci_high"], color=colour, alpha=0.15)
            if len(pos) == 1:  # a band over one strength has no width: its interval as a bar
                err = [pos[f"dr_{t}"] - pos[f"dr_{t}_ci_low"], pos[f"dr_{t}_ci_high"] - pos[f"dr_{t}"]]
                ax.errorbar(pos["strength"], pos[f"dr_{t}"], yerr=err, fmt=marker, color=colour, capsize=3)
            if len(zero):  # dodged sideways inside the linear part so that overlapping bars stay visible
                dodge = (i - (len(groups) - 1) / 2) * 0.12 * linthresh / max(len(groups), 1)
                err = [zero[f"dr_{t}"] - zero[f"dr_{t}_ci_low"], zero[f"dr_{t}_ci_high"] - zero[f"dr_{t}"]]
                ax.errorbar(zero["strength"] + dodge, zero[f"dr_{t}"], yerr=err, fmt=marker, color=colour, capsize=3)
        handles.append(line)
    for ax, t in zip(axes, TARGETS):
        baseline = ax.axhline(0, color="black", lw=1, ls="--", label="baseline (Δr = 0)")
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_xlim(left=min(0.0, float(data["strength"].min())) - 0.15 * linthresh)  # no empty negative decades
        ticks = _strength_ticks(data["strength"], linthresh)
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.minorticks_off()
        if (data["strength"] <= 0).any() and len(positive):
            ax.axvline(linthresh, color="grey", lw=0.6, ls=":")  # where the linear part (around 0) meets the log axis
        ax.set_xlabel("strength (log scale right of the dotted line; s = 0 not joined)")
        ax.set_ylabel(f"Δr {t} (95% CI)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    for ax, t in zip(axes, TARGETS):
        _mark_shapes(ax, [s for s in context.shapes if s.target == t and s.kind != "graded"], len(groups) > 1)
    question = "How does Δr change with the steering strength?"
    fig.suptitle(context.title(data, ["Δr = r(steered) − r(baseline)"], question), fontsize=10)
    fig.legend(
        [*handles, baseline],
        [h.get_label() for h in handles] + ["baseline (Δr = 0)"],
        loc="lower center",
        ncol=min(len(handles) + 1, 5),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _mark_shapes(ax, shapes: Sequence[Any], name_groups: bool) -> None:
    """Write "flat" / "step" into the panel (above the data), so the figure cannot be read as a best strength."""
    lines = []
    for shape in shapes:
        where = ", ".join(f"{k}={v}" for k, v in shape.where.items()) if name_groups else ""
        what = "flat: the same Δr at every strength" if shape.kind == "flat" else "step: the same Δr at every s > 0"
        lines.append(f"{where + ': ' if where else ''}{what}")
    if lines:
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + (high - low) * 0.1 * (len(lines) + 1))  # headroom: the note covers no point
        box = {"boxstyle": "round", "facecolor": "white", "edgecolor": "#D55E00", "alpha": 0.9}
        ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=8, bbox=box)


def _strength_ticks(strengths: pd.Series, linthresh: float) -> list[float]:
    """0 (when present), the first positive strength and the powers of ten up to the largest strength."""
    import math

    top = float(strengths.max())
    ticks = [0.0] if (strengths <= 0).any() else []
    ticks.append(linthresh)
    if top > 0:
        for k in range(math.ceil(math.log10(linthresh)), math.floor(math.log10(top)) + 1):
            if 10.0**k > linthresh * 1.5:
                ticks.append(10.0**k)
        if top > ticks[-1] * 1.5:
            ticks.append(top)
    return ticks


def row_labels(table: pd.DataFrame, varied: Sequence[str] = ()) -> list[str]:
    """One label per row from the swept keys (or, without them, every choice that differs between rows)."""
    keys = [k.lstrip("+~") for k in varied if k.lstrip("+~") in table]
    keys = [k for k in keys if table[k].nunique(dropna=False) > 1] or varying_choices(table)
    oracle = table["oracle"].astype(str).str.lower() == "true" if "oracle" in table else pd.Series(False, table.index)
    labels = []
    for (_, row), is_oracle in zip(table.iterrows(), oracle):
        text = ", ".join(f"{k}={row[k]}" for k in keys) or str(row.get("run_name", ""))
        if is_oracle and not oracle.all():
            text += " (oracle)"
        labels.append(text)
    return labels


def draw_forest(table: pd.DataFrame, context: FigureContext | None = None):
    """Δr with its 95% CI per row, valence and arousal side by side (for sweeps that do not vary strength);
    under it, when the context has contrasts, each condition − control contrast with its interval."""
    if len(table) < 1 or ("strength" in table and table["strength"].nunique(dropna=True) >= 2):
        return None
    plt = _pyplot()
    context = context or FigureContext(sweep_id="")
    contrasts = context.contrasts if context.contrasts is not None and not context.contrasts.empty else None
    n = len(table)
    per_target = int((contrasts["target"] == TARGETS[0]).sum()) if contrasts is not None else 0
    heights = [1.6 + 0.42 * n, *([1.4 + 0.42 * per_target] if per_target else [])]
    fig = plt.figure(figsize=(11, sum(heights)))
    grid = fig.add_gridspec(len(heights), len(TARGETS), height_ratios=heights)
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[0, j], sharey=axes[0]) for j in range(1, len(TARGETS))]
    _forest_rows(axes, table, row_labels(table, context.varied))
    if per_target:
        lower = [fig.add_subplot(grid[1, 0])]
        lower += [fig.add_subplot(grid[1, j], sharey=lower[0]) for j in range(1, len(TARGETS))]
        _forest_contrasts(lower, contrasts)
    extra = []
    if "strength" in table and table["strength"].nunique(dropna=True) == 1:
        extra.append(f"strength {table['strength'].dropna().iloc[0]:g}")
    extra.append("dashed: baseline (Δr = 0)")
    question = (
        "Does steering with the condition beat the controls? Δr per row (top), condition − control (bottom)"
        if per_target
        else "Does each configuration change r? Δr = r(steered) − r(baseline) per row"
    )
    fig.suptitle(context.title(table, extra, question), fontsize=10)
    fig.tight_layout()
    return fig


def _forest_rows(axes, table: pd.DataFrame, labels: Sequence[str]) -> None:
    """One error bar per finished row and target; unfinished rows are labelled with their status."""
    from matplotlib.ticker import MaxNLocator

    n = len(table)
    y = list(range(n))[::-1]
    for ax, t in zip(axes, TARGETS):
        for i, (_, row) in enumerate(table.iterrows()):
            colour, marker = OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]
            if row.get("status") != "FINISHED" or pd.isna(row.get(f"dr_{t}")):
                ax.annotate(str(row.get("status", "missing")).lower(), (0, y[i]), ha="center", va="center", fontsize=8)
                continue
            low, mid, high = row[f"dr_{t}_ci_low"], row[f"dr_{t}"], row[f"dr_{t}_ci_high"]
            ax.errorbar([mid], [y[i]], xerr=[[mid - low], [high - mid]], fmt=marker, color=colour, capsize=3, ms=6)
        ax.axvline(0, color="black", lw=1, ls="--")
        ax.set_title(t)
        ax.set_xlabel(f"Δr {t} (95% CI)")
        ax.xaxis.set_major_locator(MaxNLocator(5))  # four-decimal labels must not run into each other
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    axes[0].set_yticks(y, labels)
    axes[0].set_ylim(-0.7, n - 0.3)
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)


def _forest_contrasts(axes, contrasts: pd.DataFrame) -> None:
    """Δr(condition) − Δr(control) with its paired-bootstrap interval and p, per target."""
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in contrasts.columns[: list(contrasts.columns).index("target")] if contrasts[k].nunique() > 1]
    for ax, t in zip(axes, TARGETS):
        rows = contrasts[contrasts["target"] == t].reset_index(drop=True)
        y = list(range(len(rows)))[::-1]
        labels = []
        for i, row in rows.iterrows():
            where = ", ".join(f"{k}={row[k]}" for k in keys)
            labels.append(f"{where + ': ' if where else ''}{row['condition']} − {row['control']}")
            low, mid, high = row["ci_low"], row["contrast"], row["ci_high"]
            ax.errorbar([mid], [y[i]], xerr=[[mid - low], [high - mid]], fmt="D", color="#009E73", capsize=3, ms=5)
            ax.annotate(
                f"p {row['p']:.2g}", (high, y[i]), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7
            )
        ax.axvline(0, color="black", lw=1, ls="--")
        ax.set_xlabel(f"condition − control, Δr {t} (95% CI)")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.2)
        if ax is axes[0]:
            ax.set_yticks(y, labels)
            ax.set_ylim(-0.7, len(rows) - 0.3)
        else:
            ax.tick_params(labelleft=False)
