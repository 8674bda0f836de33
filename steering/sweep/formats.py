"""Number formats shared by every table a person reads (Markdown files, the terminal, MLflow descriptions).

Δr and r: 4 decimals (Δr signed); p and q values: 2 significant digits; strength: as typed. The CSV
keeps full precision.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from steering.vocab import TARGETS

#: p/q columns: ``dr_valence_p``, ``dr_valence_p_holm``, ``dr_valence_q``, ``p_holm`` ...
_PQ = re.compile(r"(^|_)(p|q)(_|$)")
_DELTA = re.compile(r"^(diff_)?dr_")
_R = re.compile(r"^r_")


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def format_p(value: float) -> str:
    """2 significant digits: ``0.34``, ``0.034``, ``0.0079``, ``6.9e-07``, ``1``."""
    return f"{value:.2g}"


def format_cell(column: str, value: object) -> str:
    """One value of ``column`` as a person reads it; blank for missing."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
        if math.isinf(value):
            return str(value)
        if _PQ.search(column):
            return format_p(value)
        if _DELTA.search(column) and column.endswith("_sd"):
            return f"{round(value, 4) + 0.0:.4f}"
        if _DELTA.search(column) and not column.endswith(("_draws", "_n")):
            return f"{round(value, 4) + 0.0:+.4f}"  # + 0.0: no "-0.0000"
        if _R.search(column):
            return f"{round(value, 4) + 0.0:.4f}"
        if column == "coverage":
            return f"{value:.1%}"
        if column in ("job", "n_jobs", "n_failed") or value.is_integer():
            return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every cell formatted as text."""
    return pd.DataFrame(
        {c: [format_cell(str(c), v) for v in table[c].tolist()] for c in table.columns}, index=table.index
    )


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-style Markdown table (no extra dependency) in the shared number formats."""
    text = formatted(table)
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if _numeric(table[c]) else "---" for c in table.columns) + "|"
    body = ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _interval(low: object, high: object) -> str:
    if is_missing(low) or is_missing(high):
        return ""
    return f"[{low:+.3f},{high:+.3f}]"


def render(rows: Sequence[Sequence[str]], header: Sequence[str], right: Sequence[bool]) -> str:
    """Fixed-width text columns, two spaces apart."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def terminal_view(table: pd.DataFrame, choices: Sequence[str], width: int = 100, targets=TARGETS) -> str:
    """The comparison table cut down to fit ``width`` columns: choices, Δr [95% CI], p and (when the table
    has them) BH q per target, a note.

    The richest layout that fits wins: q values go first, then intervals, then long choice values are shortened.
    """
    choices = [c for c in choices if c in table]
    oracle = table["oracle"].astype(str).str.lower() == "true" if "oracle" in table else pd.Series(False, table.index)
    status = table["status"].astype(str) if "status" in table else pd.Series("FINISHED", table.index)
    note = []
    for is_oracle, state in zip(oracle, status):
        flags = [] if state == "FINISHED" else [state]
        if is_oracle and not oracle.all():  # all-oracle tables say so once, above the table
            flags.append("oracle")
        note.append(",".join(flags))
    with_note = any(note)

    has_q = all(f"dr_{t}_q" in table for t in targets)

    def build(with_ci: bool, with_q: bool, limit: int | None, terse: bool = False) -> str:
        header = ["job", *choices]
        right = [True, *(_numeric(table[c]) for c in choices)]
        for t in targets:  # the target spelt out: "Δr val" would read as the val split
            of = "" if terse else f" {t}"  # terse: p and q name no target; they follow their "Δr <target>"
            header += [f"Δr {t}", *([f"95% CI{of}"] if with_ci else []), f"p{of}"]
            header += [f"q{of}"] if with_q else []
            right += [True, *([True] if with_ci else []), True, *([True] if with_q else [])]
        if with_note:
            header.append("note")
            right.append(False)
        rows = []
        for i, (_, r) in enumerate(table.iterrows()):
            cells = [format_cell("job", r.get("job"))]
            for c in choices:
                text = format_cell(c, r[c])
                cells.append(text if limit is None or len(text) <= limit else text[: limit - 1] + "…")
            for t in targets:
                cells.append(format_cell(f"dr_{t}", r.get(f"dr_{t}")))
                if with_ci:
                    cells.append(_interval(r.get(f"dr_{t}_ci_low"), r.get(f"dr_{t}_ci_high")))
                cells.append(format_cell(f"dr_{t}_p", r.get(f"dr_{t}_p")))
                if with_q:
                    cells.append(format_cell(f"dr_{t}_q", r.get(f"dr_{t}_q")))
            if with_note:
                cells.append(note[i])
            rows.append(cells)
        return render(rows, header, right)

    text = ""
    layouts = [(True, True, None), (True, False, None), (False, True, None), (False, False, None)]
    layouts += [(False, has_q, 16), (False, False, 16), (False, False, 10), (False, False, 6)]
    for with_ci, with_q, limit, terse in [*((*x, False) for x in layouts), *((*x, True) for x in layouts[-4:])]:
        if with_q and not has_q:
            continue
        text = build(with_ci, with_q, limit, terse)
        if max(len(line) for line in text.splitlines()) <= width:
            return text
    return text


def text_table(table: pd.DataFrame, columns: Sequence[str], width: int = 100, headers: Sequence[str] = ()) -> str:
    """``columns`` of ``table`` as fixed-width text, text cells shortened until the lines fit ``width``."""
    columns = [c for c in columns if c in table]
    header = list(headers) or [str(c) for c in columns]
    right = [_numeric(table[c]) for c in columns]
    text = ""
    for limit in (None, 24, 16, 10, 6):
        rows = []
        for _, r in table.iterrows():
            cells = [format_cell(str(c), r[c]) for c in columns]
            if limit is not None:
                cells = [x if n or len(x) <= limit else x[: limit - 1] + "…" for x, n in zip(cells, right)]
            rows.append(cells)
        text = render(rows, header, right)
        if max(len(line) for line in text.splitlines()) <= width:
            break
    return text
