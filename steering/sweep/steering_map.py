"""The steering map of a sweep steered toward fixed categories: where did the predictions go?

For each row (one target category, and any other choice the sweep varies) an arrow runs from the
evaluated clips' baseline centroid (mean prediction) to their steered centroid in the
valence-arousal plane; each target's centre (the mean ratings of its training clips) is marked and
labelled in the arrow's colour. Steering that works points every arrow at its own centre. The left
panel is the plane to scale; the arrows are usually short next to the distances between centres,
so the right panel enlarges them, with a dashed line from the baseline centroid toward each
target's centre: an arrow along its dashed line went toward the target. The legend gives each
row's ``toward_target_share`` and reductions (docs/statistics.md, "Steering toward a chosen emotion").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from steering.sweep.columns import varying_choices
from steering.sweep.figures import FigureContext, _pyplot, _save
from steering.vocab import TARGETS

#: Nine targets need nine colours: Okabe-Ito without its yellow (unreadable as text on white) and its black (the
#: baseline centroid is the black dot), a purple, a grey, a brown.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#7B3294", "#999999", "#8C510A")
#: Behind a label: the arrows and lines it crosses stay visible, the text stays readable.
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}
_POINTS = ("target_centre", "base_centroid", "steered_centroid")


def map_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Finished rows that logged the centroids (runs steered toward one category), in table order."""
    needed = [f"{p}_{t}" for p in _POINTS for t in TARGETS]
    if not set(needed) <= set(table.columns):
        return table.iloc[0:0]
    finished = table[table["status"] == "FINISHED"] if "status" in table else table
    return finished.dropna(subset=needed)


def write_map(table: pd.DataFrame, path: str | Path, context: FigureContext | None = None) -> list[Path]:
    """``[steering_map.png]`` when some rows were steered toward a fixed category, else ``[]``."""
    rows = map_rows(table)
    if rows.empty:
        return []
    return [_save(draw_map(rows, context or FigureContext(sweep_id="")), path)]


def _targets(rows: pd.DataFrame) -> list[str]:
    """Each row's target: ``category.target`` when it is a column (it varies), else the centre it names."""
    if "category.target" in rows:
        return [str(v) for v in rows["category.target"]]
    return [f"target ({r.target_centre_valence:+.2f}, {r.target_centre_arousal:+.2f})" for r in rows.itertuples()]


def _point(row: pd.Series, kind: str) -> np.ndarray:
    return np.array([float(row[f"{kind}_valence"]), float(row[f"{kind}_arousal"])])


def draw_map(rows: pd.DataFrame, context: FigureContext):
    """The figure: the plane to scale (left) and the arrows enlarged (right); see the module docstring."""
    plt = _pyplot()
    targets = _targets(rows)
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(dict.fromkeys(targets))}
    fig, (plane, zoom) = plt.subplots(1, 2, figsize=(14, 6.2))
    names, labels = _names(rows, context.varied), _legend_labels(rows, context.varied)
    for (_, row), target, name, label in zip(rows.iterrows(), targets, names, labels):
        colour, start, end = colour_of[target], _point(row, "base_centroid"), _point(row, "steered_centroid")
        centre = _point(row, "target_centre")
        for ax in (plane, zoom):
            ax.annotate("", end, start, arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.8, "shrinkA": 0})
        zoom.plot(*end, "o", color=colour, ms=4, label=label)
        _tip_label(zoom, start, end, name, colour)
        plane.plot(*centre, "X", color=colour, ms=11, mec="black", mew=0.6)
        plane.annotate(
            target,
            centre,
            xytext=(0, 9),
            textcoords="offset points",
            fontsize=8,
            color=colour,
            ha="center",
            bbox=_LABEL_BOX,
        )
        _toward(zoom, start, centre, colour)
    starts = np.array([_point(r, "base_centroid") for _, r in rows.iterrows()])
    for ax in (plane, zoom):
        ax.plot(*starts.mean(axis=0), "o", color="black", ms=5, zorder=5)
    _style_plane(plane)
    _style_zoom(zoom, rows)
    question = "Where does steering toward each category move the predictions?"
    extra = ["arrows: baseline centroid (•) → steered centroid, mean over the clips", "×: target's centre"]
    fig.suptitle(context.title(rows, extra, question), fontsize=10)
    zoom.legend(
        fontsize=7.5,
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
        frameon=False,
        title="target: clips moved closer;\nmean distance reduction",
        title_fontsize=8,
    )
    fig.tight_layout()
    return fig


def _names(rows: pd.DataFrame, varied: Sequence[str]) -> list[str]:
    """Each row's target, with the other varied choices in brackets when there are any."""
    others = [k for k in row_label_keys(rows, varied) if k != "category.target"]
    return [
        target + (f" ({', '.join(f'{k}={row[k]}' for k in others)})" if others else "")
        for (_, row), target in zip(rows.iterrows(), _targets(rows))
    ]


def _legend_labels(rows: pd.DataFrame, varied: Sequence[str]) -> list[str]:
    """``positive_strong: 76% · valence -0.024, arousal +0.138`` per row (other varied choices in brackets)."""
    labels = []
    for (_, row), name in zip(rows.iterrows(), _names(rows, varied)):
        if all(pd.notna(row.get(f"toward_target_{a}")) for a in (*TARGETS, "share")):
            moved = ", ".join(f"{t} {row[f'toward_target_{t}']:+.3f}" for t in TARGETS)
            name += f": {row['toward_target_share']:.0%} · {moved}"
        labels.append(name)
    return labels


def row_label_keys(rows: pd.DataFrame, varied: Sequence[str]) -> list[str]:
    """The swept keys that differ between the rows (without them, every choice that does)."""
    keys = [k.lstrip("+~") for k in varied if k.lstrip("+~") in rows]
    return [k for k in keys if rows[k].nunique(dropna=False) > 1] or varying_choices(rows)


def _tip_label(ax, start: np.ndarray, end: np.ndarray, text: str, colour: str) -> None:
    """The target's name just beyond the arrow's tip, on the arrow's line."""
    direction = end - start
    length = float(np.hypot(*direction))
    unit = direction / length if length > 0 else np.array([1.0, 0.0])
    ha = "left" if unit[0] > 0.3 else "right" if unit[0] < -0.3 else "center"
    va = "bottom" if unit[1] > 0.3 else "top" if unit[1] < -0.3 else "center"
    ax.annotate(
        text,
        end,
        xytext=tuple(unit * 8),
        textcoords="offset points",
        fontsize=7,
        color=colour,
        ha=ha,
        va=va,
        bbox=_LABEL_BOX,
    )


def _toward(ax, start: np.ndarray, centre: np.ndarray, colour: str) -> None:
    """A dashed ray from the baseline centroid toward the target's centre, clipped by the panel later."""
    direction = centre - start
    length = float(np.hypot(*direction))
    if length > 0:
        ax.plot(*np.column_stack([start, start + direction / length * 10]), ls="--", lw=0.8, color=colour, alpha=0.6)


def _style_plane(ax) -> None:
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    low, high = min(-1.0, *ax.get_xlim(), *ax.get_ylim()), max(1.0, *ax.get_xlim(), *ax.get_ylim())
    ax.set_xlim(low - 0.05, high + 0.05)
    ax.set_ylim(low - 0.05, high + 0.05)
    ax.set_aspect("equal")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title("to scale: category centres (×) and arrows (• all arrows start here)", fontsize=9)
    ax.grid(alpha=0.3)


def _style_zoom(ax, rows: pd.DataFrame) -> None:
    """Frame the arrows (equal scale on both axes, so a direction on screen is a direction in the plane)."""
    points = np.array([_point(r, k) for _, r in rows.iterrows() for k in ("base_centroid", "steered_centroid")])
    middle = (points.min(axis=0) + points.max(axis=0)) / 2
    half = max(float((points.max(axis=0) - points.min(axis=0)).max()) / 2 * 1.25, 1e-4)
    ax.set_xlim(middle[0] - half, middle[0] + half)
    ax.set_ylim(middle[1] - half, middle[1] + half)
    ax.set_aspect("equal")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title("enlarged: arrows; dashed: the direction of each target's centre", fontsize=9)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(useOffset=False)
