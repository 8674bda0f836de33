"""Multiplicity over a comparison table: Holm-adjusted p-values and Benjamini-Hochberg q-values.

The family is every FINISHED row of the table times both targets (one family p per cell, the column
:func:`steering.stats.family.family_p_column`: the paired-bootstrap p of Δr), so a table of 10 runs
is a family of 20 tests. Holm (1979) controls the family-wise error rate (the
chance of any false rejection); Benjamini-Hochberg (1995) controls the false discovery rate (the
expected share of false rejections among the rejections). Rows that did not finish, or whose p is
undefined, are outside the family and get NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from steering.stats.family import FAMILY_P_LABEL, family_p_column
from steering.vocab import TARGETS

ALPHA = 0.05
ADJUSTED_COLUMNS = tuple(f"dr_{t}_{kind}" for t in TARGETS for kind in ("p_holm", "q"))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in input order: p~_(i) = max_{k<=i} (m - k + 1) p_(k), capped at 1."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (``scipy.stats.false_discovery_control``, method ``bh``)."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return p.copy()
    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=np.float64)


def family_mask(table: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame (rows x targets): which cells belong to the family (finished row, finite p)."""
    finished = table["status"] == "FINISHED" if "status" in table else pd.Series(True, index=table.index)
    return pd.DataFrame(
        {t: finished & np.isfinite(pd.to_numeric(table[family_p_column(t)], errors="coerce")) for t in TARGETS},
        index=table.index,
    )


def add_adjusted_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``dr_{t}_p_holm`` and ``dr_{t}_q`` over the table's family, each placed right after the family p."""
    table = table.copy()
    mask = family_mask(table)
    cells = [(i, t) for t in TARGETS for i in table.index[mask[t]]]
    p = np.array([float(table.at[i, family_p_column(t)]) for i, t in cells])
    holm_p, bh_q = holm(p), benjamini_hochberg(p)
    for t in TARGETS:
        table[f"dr_{t}_p_holm"] = np.nan
        table[f"dr_{t}_q"] = np.nan
    for (i, t), h, q in zip(cells, holm_p, bh_q):
        table.at[i, f"dr_{t}_p_holm"] = h
        table.at[i, f"dr_{t}_q"] = q
    columns = [c for c in table.columns if c not in ADJUSTED_COLUMNS]
    for t in TARGETS:
        if family_p_column(t) in columns:
            at = columns.index(family_p_column(t)) + 1
            columns[at:at] = [f"dr_{t}_p_holm", f"dr_{t}_q"]
    return table[columns]


def _row_label(table: pd.DataFrame, index) -> str:
    name = table.at[index, "run_name"] if "run_name" in table else None
    job = table.at[index, "job"] if "job" in table else None
    label = str(name) if isinstance(name, str) and name else f"row {index}"
    return f"job {int(job)} ({label})" if job is not None and pd.notna(job) else label


def describe_family(table: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    """Markdown lines: the family's size and the (row, target) cells that survive Holm and BH at ``alpha``."""
    if not {f"dr_{t}_p_holm" for t in TARGETS} <= set(table.columns):
        table = add_adjusted_columns(table)
    mask = family_mask(table)
    n_rows = int(mask.any(axis=1).sum())
    n_tests = int(mask.to_numpy().sum())
    lines = [
        "## Multiplicity",
        "",
        f"Family: {n_tests} tests ({FAMILY_P_LABEL} of Δr for {n_rows} finished rows × {len(TARGETS)} targets). "
        f"`dr_<target>_p_holm`: Holm-adjusted p (family-wise error rate); `dr_<target>_q`: "
        f"Benjamini-Hochberg q (false discovery rate).",
        "",
    ]
    for column, what in (("p_holm", "Holm (FWER)"), ("q", "Benjamini-Hochberg (FDR)")):
        hits = [
            f"{_row_label(table, i)} {t} (Δr {table.at[i, f'dr_{t}']:+.4f})"
            for i in table.index
            for t in TARGETS
            if mask.at[i, t] and table.at[i, f"dr_{t}_{column}"] <= alpha
        ]
        lines.append(f"- survive {what} at {alpha:g}: " + ("; ".join(hits) if hits else "none"))
    return lines
