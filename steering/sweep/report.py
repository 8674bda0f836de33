"""The end-of-sweep report: one pipeline for the sweep callback and ``steering-report``.

From a sweep's runs it builds the comparison table (with its multiplicity columns), the analyses
that apply (contrasts, steerability, their figures), the confirmation notes, ``comparison.csv`` /
``comparison.md`` with a figure, and the terminal view. The callback runs it when a sweep ends
(and annotates the parent run); ``python -m steering.report`` runs it again at any time later,
so a rebuilt report is the same report.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from steering.sweep import confirmation as conf
from steering.sweep import formats, ties
from steering.sweep import table as tbl
from steering.sweep.analysis import Analyses, write_analyses
from steering.sweep.contrasts import bootstrap_settings

log = logging.getLogger(__name__)

TERMINAL_WIDTH = 100


@dataclass
class SweepReport:
    """What :func:`write_report` built: the runs and table, the analyses, every file written."""

    runs: tbl.SweepRuns
    table: pd.DataFrame
    analyses: Analyses
    paths: list[Path] = field(default_factory=list)
    #: Selection and tie rule, flat or step strength responses: lines above the table.
    notes: list[str] = field(default_factory=list)
    #: confirmation.csv's rows when the sweep confirmed its choice (else None).
    confirmation: pd.DataFrame | None = None


def write_report(
    client: MlflowClient,
    runs: tbl.SweepRuns,
    out_dir: str | Path,
    *,
    varied: Sequence[str],
    bootstrap: Mapping[str, float | int],
    preset: str | None = None,
    table: pd.DataFrame | None = None,
) -> SweepReport:
    """Table, analyses, notes, comparison.csv/.md and figure of a sweep into ``out_dir``.

    ``table``: the comparison table when the caller already built it (the callback chooses the row
    to confirm from it before the confirmation run joins the sweep's runs).
    """
    if table is None:
        table = tbl.comparison_table(runs.children, list(varied))
    analyses = write_analyses(client, table, out_dir, bootstrap)
    shapes = ties.response_shapes(table)
    notes = [*conf.selection_notes(runs.children, table), *ties.describe_shapes(shapes)]
    confirmation = conf.rebuild_confirmation(runs.children, table, list(varied))
    confirmed = conf.confirmed_lines(confirmation)
    fixed = tbl.fixed_choices(runs.children)
    as_list = [f"- {line.strip()}" if line.startswith("  ") else line for line in confirmed]  # Markdown list items
    markdown_notes = [line for note in [*notes, *(["\n".join(as_list)] if confirmed else [])] for line in ("", note)]
    paths = tbl.write_outputs(
        table,
        runs.sweep_id,
        out_dir,
        markdown_notes,
        analyses.sections,
        preset=preset,
        varied=list(varied),
        fixed=fixed,
        shapes=shapes,
        contrasts=analyses.contrasts,
    )
    return SweepReport(runs, table, analyses, paths, notes, confirmation)


def terminal_view(table: pd.DataFrame, width: int = TERMINAL_WIDTH) -> str:
    """The table's varying choices and main metrics, fitted to ``width`` columns.

    When the names would have to be shortened to fit, choices that an earlier column already
    determines (``signals.method`` under a ``signal_variant``) are left out first: comparison.md keeps them.
    """
    choices = [c for c in tbl.choice_columns(table) if table[c].nunique(dropna=False) > 1]
    text = formats.terminal_view(table, choices, width)
    independent = _independent_choices(table, choices)
    if "…" in text and len(independent) < len(choices):
        return formats.terminal_view(table, independent, width)
    return text


def _independent_choices(table: pd.DataFrame, choices: list[str]) -> list[str]:
    """``choices`` less each column whose value an earlier kept column fixes (one value per group)."""
    kept: list[str] = []
    for column in choices:
        as_text = table[column].astype(str)
        if not any(as_text.groupby(table[k].astype(str)).nunique().max() <= 1 for k in kept):
            kept.append(column)
    return kept


def terminal_text(report: SweepReport, width: int = TERMINAL_WIDTH) -> str:
    """What the terminal shows at the end of a sweep: which split and n the rows were scored on, the
    selection and tie rule, flat or step responses, the table, and last the confirmed figures."""
    table = report.table
    n_failed = int((table["status"] != "FINISHED").sum()) if len(table) else 0
    head = [
        f"{len(table)} configurations, {n_failed} not finished. {tbl.scored_on(table)} "
        "Δr valence and Δr arousal are the two targets, not splits.",
        *report.notes,
    ]
    if (table.get("oracle", pd.Series(dtype=str)).astype(str).str.lower() == "true").all() and len(table):
        head.append("All rows use oracle signals (chosen from the evaluated samples' own ratings).")
    wrapped = [textwrap.fill(line, width, subsequent_indent="  ") for line in head]
    confirmed = conf.confirmed_lines(report.confirmation)
    tail = ["", *[textwrap.fill(line, width, subsequent_indent="    ") for line in confirmed]] if confirmed else []
    return "\n".join([*wrapped, "", terminal_view(table, width), *tail])


def sweep_table(client: MlflowClient, sweep_id: str) -> tuple[tbl.SweepRuns, pd.DataFrame]:
    """A stored sweep's runs and comparison table."""
    runs = tbl.find_sweep(client, sweep_id)
    return runs, tbl.comparison_table(runs.children, runs.varied)


@dataclass
class Rebuilt:
    """A report rebuilt from the tracking store: the table, the files, and what to print."""

    table: pd.DataFrame
    paths: list[Path]
    text: str


def report_sweep(client: MlflowClient, sweep_id: str, out: Path, log_to_parent: bool = False) -> Rebuilt:
    """Rebuild comparison.csv/.md, the figure, the analyses and confirmation.csv of a stored sweep
    into ``out/<sweep_id>`` (and attach them to the parent run under ``report/``)."""
    runs = tbl.find_sweep(client, sweep_id)
    finished = [r for r in runs.children if r.info.status == "FINISHED"]
    bootstrap = bootstrap_settings(finished[0].data.params if finished else {})
    preset = runs.parent.data.tags.get(tbl.TAG_PRESET) if runs.parent is not None else None
    report = write_report(client, runs, out / sweep_id, varied=runs.varied, bootstrap=bootstrap, preset=preset)
    paths = report.paths + report.analyses.paths
    confirmation = report.confirmation
    if confirmation is not None:
        confirmation.to_csv(out / sweep_id / "confirmation.csv", index=False)
        paths.append(out / sweep_id / "confirmation.csv")
    if log_to_parent and runs.parent is not None:
        for path in paths:
            client.log_artifact(runs.parent.info.run_id, str(path), "report")
    text = f"# Sweep {sweep_id}\n\n{terminal_text(report)}\n\nfull table, figure and analyses: "
    return Rebuilt(report.table, paths, text + ", ".join(str(p) for p in paths))


def report_compare(client: MlflowClient, first: str, second: str, out: Path) -> Rebuilt:
    """Δr differences (second minus first) for configurations that both sweeps ran."""
    runs_a, runs_b = tbl.find_sweep(client, first), tbl.find_sweep(client, second)
    comparison = tbl.compare_runs(runs_a, runs_b)
    diff = comparison.table
    target = out / f"compare_{first}_vs_{second}"
    target.mkdir(parents=True, exist_ok=True)
    diff.to_csv(target / "comparison_diff.csv", index=False)
    scored = [
        f"{name}: {tbl.scored_on(tbl.comparison_table(r.children))}" for name, r in (("A", runs_a), ("B", runs_b))
    ]
    header = "\n".join([comparison.header(first, second), *(textwrap.fill(line, 100) for line in scored)])
    (target / "comparison_diff.md").write_text(f"{header}\n\n{tbl.to_markdown(diff)}")
    columns = [*comparison.keys]
    names = [*comparison.keys]
    for t in tbl.TARGETS:
        columns += [f"dr_{t}_a", f"dr_{t}_b", f"diff_dr_{t}"]
        names += [f"Δr {t} A", f"Δr {t} B", f"B−A {t}"]
    text = (
        f"{header}\nA = {first}, B = {second}\n\n{formats.text_table(diff, columns, TERMINAL_WIDTH, names)}\n"
        f"\nfull table (with p values and both run ids): {target / 'comparison_diff.csv'}, comparison_diff.md"
    )
    paths = [target / "comparison_diff.csv", target / "comparison_diff.md"]
    return Rebuilt(diff, paths, text)
