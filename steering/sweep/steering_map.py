"""The steering map of a sweep steered toward fixed categories: where did the predictions go?

For each row (one target category, and any other choice the sweep varies) an arrow runs from the
evaluated clips' baseline centroid (mean prediction) to their steered centroid in the
valence-arousal plane; each target's centre (the mean ratings of its training clips) is marked and
labelled in the arrow's colour. Steering that works points every arrow at its own centre. The left
panel is the plane to scale; the arrows are usually short next to the distances between centres,
so the right panel enlarges them, with a dashed line from the baseline centroid toward each
target's centre: an arrow along its dashed line went toward the target. The legend gives each
row's ``toward_target_share`` (docs/statistics.md, "Steering toward a chosen emotion").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from steering.sweep.figures import OKABE_ITO, FigureContext, _pyplot, _save, row_labels
from steering.vocab import TARGETS

#: Nine targets need nine colours: Okabe-Ito and a grey.
COLOURS = (*OKABE_ITO, "#999999")
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
    """Each row's target: ``category.target`` when the table has it, else the row's label."""
    if "category.target" in rows:
        return [str(v) for v in rows["category.target"]]
    return [f"target {i + 1}" for i in range(len(rows))]


def _point(row: pd.Series, kind: str) -> np.ndarray:
    return np.array([float(row[f"{kind}_valence"]), float(row[f"{kind}_arousal"])])


def draw_map(rows: pd.DataFrame, context: FigureContext):
    """The figure: the plane to scale (left) and the arrows enlarged (right); see the module docstring."""
    plt = _pyplot()
    targets = _targets(rows)
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(dict.fromkeys(targets))}
    labels = _legend_labels(rows, context.varied)
    fig, (plane, zoom) = plt.subplots(1, 2, figsize=(13, 6.4))
    for (_, row), target, label in zip(rows.iterrows(), targets, labels):
        colour, start, end = colour_of[target], _point(row, "base_centroid"), _point(row, "steered_centroid")
        centre = _point(row, "target_centre")
        for ax in (plane, zoom):
            ax.annotate("", end, start, arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.8, "shrinkA": 0})
        zoom.plot(*end, "o", color=colour, ms=4, label=label)
        plane.plot(*centre, "X", color=colour, ms=11, mec="black", mew=0.6)
        plane.annotate(target, centre, xytext=(6, 6), textcoords="offset points", fontsize=8, color=colour)
        _toward(zoom, start, centre, colour)
    starts = np.array([_point(r, "base_centroid") for _, r in rows.iterrows()])
    plane.plot(*starts.mean(axis=0), "o", color="black", ms=5)
    _style_plane(plane)
    _style_zoom(zoom, rows)
    question = "Where does steering toward each category move the predictions?"
    extra = [
        "arrows: baseline centroid → steered centroid (mean prediction)",
        "×: centre of the target's training clips",
    ]
    fig.suptitle(context.title(rows, extra, question), fontsize=10)
    zoom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, title="steered centroid")
    fig.tight_layout()
    return fig


def _legend_labels(rows: pd.DataFrame, varied: Sequence[str]) -> list[str]:
    """``<row label>: 63 % of clips closer`` per row."""
    share = rows.get("toward_target_share", pd.Series(np.nan, index=rows.index))
    text = row_labels(rows, varied) if len(rows) > 1 else _targets(rows)
    return [f"{t}: {s:.0%} of clips closer" if pd.notna(s) else t for t, s in zip(text, share)]


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
