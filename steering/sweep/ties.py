"""When two Δr are the same number for a reader: the tie rule of selection and the shape of a strength response.

Under ``method=lrm`` normalisation cancels the strength, so every s > 0 gives the same Δr up to float
noise; picking the "best" strength there reports noise. Two values count as **tied** when they lie
within

    tolerance = max(TIE_ABS, TIE_SE_FRACTION × SE)

of each other, where SE is the bootstrap standard error (half the row's 95 % interval / 1.96; for
``mean_dr`` the mean of the two targets' SEs). ``TIE_ABS`` catches numerically equal values (float32
noise is far below it); a quarter of an SE of Δr is a difference no reader should report as a better
configuration. (On the demo, ``+experiment=strengths method=lrm`` gives Δr valence +0.0030 at s = 0.1
and +0.0026 to +0.0027 at every s ≥ 0.3, SE 0.0015: all tied, so the rule takes s = 0.1.)

Selection (steering.sweep.confirmation) takes, among the rows tied with the best, the *simplest*:
the smallest strength, then the earliest job (the order the sweep lists its values in).

A strength response (Δr against strength within one group of the other choices) is

- ``flat`` when every strength's Δr is tied with every other,
- ``step`` when s = 0 differs from the positive strengths and these are tied or spread by at most
  ``STEP_FRACTION`` of the jump from s = 0 (the strength only switches steering on: the lrm case,
  whose normalisation cancels s up to its epsilon),
- ``graded`` otherwise (and when fewer than two strengths finished).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from steering.sweep.columns import varying_choices
from steering.vocab import TARGETS

TIE_ABS = 1e-6
TIE_SE_FRACTION = 0.25
STEP_FRACTION = 0.25
RULE = (
    f"values within max({TIE_ABS:g}, {TIE_SE_FRACTION:g} × bootstrap SE) of each other are tied "
    "(SE = half the 95% interval / 1.96)"
)
ORDER = "the smallest strength, then the earliest job"


def se_from_interval(low: object, high: object, confidence: float = 0.95) -> float:
    """The standard error a symmetric normal interval of this width would have; nan when missing."""
    try:
        width = float(high) - float(low)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return width / (2 * NormalDist().inv_cdf(0.5 + confidence / 2))


def row_se(row: pd.Series, targets: Sequence[str] = TARGETS) -> float:
    """Mean over ``targets`` of the row's bootstrap SE of Δr (nan when no interval is known)."""
    values = [se_from_interval(row.get(f"dr_{t}_ci_low"), row.get(f"dr_{t}_ci_high")) for t in targets]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def tolerance(se: float) -> float:
    """How close two values must be to count as tied (see the module docstring)."""
    return max(TIE_ABS, TIE_SE_FRACTION * se) if math.isfinite(se) else TIE_ABS


def simplest_first(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` in the tie-break order: smallest strength, then earliest job (missing values last)."""
    keys = pd.DataFrame(index=rows.index)
    keys["strength"] = pd.to_numeric(rows["strength"], errors="coerce") if "strength" in rows else math.nan
    keys["job"] = pd.to_numeric(rows["job"], errors="coerce") if "job" in rows else math.nan
    keys["position"] = range(len(rows))
    order = keys.sort_values(["strength", "job", "position"], na_position="last").index
    return rows.loc[order]


@dataclass(frozen=True)
class Shape:
    """The Δr response over strength of one group (``where``: the other choices) and target."""

    where: dict[str, object]
    target: str
    kind: str  # flat, step or graded
    tolerance: float
    strengths: tuple[float, ...]
    spread: float  # max - min of Δr over the strengths that are tied (all, or the positive ones)

    @property
    def label(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.where.items())
        return f"{where + ': ' if where else ''}Δr {self.target}"

    def sentence(self) -> str:
        """One line for the terminal and comparison.md (empty for a graded response)."""
        positive = [s for s in self.strengths if s > 0]
        if self.kind == "flat":
            return (
                f"{self.label} is flat over strength {_span(self.strengths)}: every strength gives the same Δr "
                f"(spread {self.spread:.2g} ≤ tolerance {self.tolerance:.2g}); no strength is better than another."
            )
        if self.kind == "step":
            return (
                f"{self.label} is a step: every s > 0 ({_span(positive)}) gives about the same Δr "
                f"(spread {self.spread:.2g}), only s = 0 differs; the strength only switches steering on "
                "(as under method=lrm, whose normalisation cancels s): no best strength to report."
            )
        return ""


def _span(strengths: Sequence[float]) -> str:
    values = sorted(strengths)
    return f"{values[0]:g} … {values[-1]:g}" if len(values) > 1 else f"{values[0]:g}"


def _spread(values: pd.Series) -> float:
    return float(values.max() - values.min()) if len(values) else math.nan


def response_shapes(table: pd.DataFrame) -> list[Shape]:
    """The shape of Δr against strength per group of the other varying choices and target (finished rows)."""
    if "strength" not in table:
        return []
    finished = table[(table["status"] == "FINISHED") & pd.to_numeric(table["strength"], errors="coerce").notna()]
    keys = varying_choices(finished, exclude=("strength",))
    groups = finished.groupby(keys, dropna=False, sort=False) if keys else [((), finished)]
    shapes = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        group = group.assign(strength=pd.to_numeric(group["strength"])).sort_values("strength")
        if group["strength"].nunique() < 2:
            continue
        for t in TARGETS:
            rows = group[pd.to_numeric(group[f"dr_{t}"], errors="coerce").notna()]
            if rows["strength"].nunique() < 2:
                continue
            dr = pd.to_numeric(rows[f"dr_{t}"])
            ses = [row_se(r, (t,)) for _, r in rows.iterrows()]
            finite = [s for s in ses if math.isfinite(s)]
            tol = tolerance(float(np.median(finite)) if finite else math.nan)
            positive = rows["strength"] > 0
            kind, spread = "graded", _spread(dr)
            jump = abs(float(dr[~positive].mean()) - float(dr[positive].median())) if (~positive).any() else 0.0
            if spread <= tol:
                kind = "flat"
            elif positive.sum() >= 2 and jump > tol and _spread(dr[positive]) <= max(tol, STEP_FRACTION * jump):
                kind, spread = "step", _spread(dr[positive])
            strengths = tuple(float(s) for s in rows["strength"].unique())
            shapes.append(Shape(dict(zip(keys, key)), t, kind, tol, strengths, spread))
    return shapes


def describe_shapes(shapes: Sequence[Shape]) -> list[str]:
    """Lines for the flat and step responses (nothing for graded ones)."""
    return [s.sentence() for s in shapes if s.kind != "graded"]
