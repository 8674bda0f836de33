"""Comparison tables and strength-response figures from a sweep's MLflow runs.

Shared by the sweep callback (at the end of a sweep) and ``python -m steering.report`` (any time later),
so a rebuilt table is the same table.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steering.stats import multiplicity
from steering.stats.family import FAMILY_P_LABEL
from steering.sweep import formats
from steering.sweep.columns import (
    CORE_CHOICES,
    RUN_METRICS,
    choice_columns,
    metric_columns,
    table_columns,
    without_absent,
)
from steering.sweep.overrides import override_values
from steering.vocab import TARGETS

log = logging.getLogger(__name__)

TAG_SWEEP_ID = "sweep_id"
TAG_ROLE = "sweep_role"
TAG_VARIED = "sweep_varied"
TAG_JOB = "sweep_job_num"
TAG_OVERRIDES = "sweep_overrides"
TAG_PRESET = "sweep_experiment"


@dataclass
class SweepRuns:
    """A sweep's parent run (if found) and its job runs."""

    sweep_id: str
    parent: Run | None
    children: list[Run]

    @property
    def varied(self) -> list[str]:
        if self.parent is None:
            return []
        return json.loads(self.parent.data.tags.get(TAG_VARIED, "[]"))


def _search(client: MlflowClient, experiment_ids: Sequence[str], filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def all_experiment_ids(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def find_sweep(client: MlflowClient, sweep_id: str, experiment_ids: Sequence[str] | None = None) -> SweepRuns:
    """The parent and child runs of ``sweep_id`` (children by tag ``sweep_id`` or ``mlflow.parentRunId``)."""
    ids = list(experiment_ids or all_experiment_ids(client))
    tagged = _search(client, ids, f"tags.{TAG_SWEEP_ID} = '{sweep_id}'")
    parents = [r for r in tagged if r.data.tags.get(TAG_ROLE) == "parent"]
    parent = parents[0] if parents else None
    children = {r.info.run_id: r for r in tagged if r.data.tags.get(TAG_ROLE) != "parent"}
    if parent is not None:
        for run in _search(client, ids, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"):
            children.setdefault(run.info.run_id, run)
    if parent is None and not children:
        raise SweepNotFound(f"no sweep {sweep_id!r}", known_sweeps(client, ids))
    ordered = sorted(children.values(), key=lambda r: (_job_num(r), r.info.start_time or 0))
    return SweepRuns(sweep_id, parent, ordered)


class SweepNotFound(LookupError):
    """A sweep, preset or MLflow experiment that is not in the store; ``known`` lists what is."""

    def __init__(self, message: str, known: Sequence[str]) -> None:
        super().__init__(message)
        self.message = message
        self.known = list(known)

    @property
    def listing(self) -> str:
        return "\n".join(f"  {line}" for line in self.known) or "  (none)"

    def __str__(self) -> str:
        return f"{self.message}; it has:\n{self.listing}"


def sweep_parents(client: MlflowClient, experiment_ids: Sequence[str] | None = None) -> list[Run]:
    """Every sweep's parent run, newest first."""
    ids = list(experiment_ids or all_experiment_ids(client))
    runs = _search(client, ids, f"tags.{TAG_ROLE} = 'parent'")
    return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)


def known_sweeps(client: MlflowClient, experiment_ids: Sequence[str] | None = None, limit: int = 20) -> list[str]:
    """One line per sweep (newest first): ``<sweep id>  preset=<name>  <status>  <start time>``."""
    from datetime import datetime

    lines = []
    for run in sweep_parents(client, experiment_ids)[:limit]:
        tags = run.data.tags
        start = datetime.fromtimestamp((run.info.start_time or 0) / 1000).strftime("%Y-%m-%d %H:%M")
        lines.append(f"{tags.get(TAG_SWEEP_ID)}  preset={tags.get(TAG_PRESET, '-')}  {run.info.status}  {start}")
    return lines


def latest_sweep_id(client: MlflowClient, preset: str | None = None, experiment: str | None = None) -> str:
    """The newest sweep, optionally of one experiment preset (``+experiment=NAME``) or MLflow experiment."""
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [f"{e.name}" for e in client.search_experiments()]
            raise SweepNotFound(f"no MLflow experiment named {experiment!r}", names)
        ids = [exp.experiment_id]
    else:
        ids = all_experiment_ids(client)
    parents = sweep_parents(client, ids)
    if preset:
        parents = [r for r in parents if r.data.tags.get(TAG_PRESET) == preset]
    if not parents:
        what = f"no sweep of preset {preset!r}" if preset else "no sweep"
        where = f" in MLflow experiment {experiment!r}" if experiment else ""
        raise SweepNotFound(what + where, known_sweeps(client, ids))
    return parents[0].data.tags[TAG_SWEEP_ID]


def _job_num(run: Run) -> int:
    try:
        return int(run.data.tags.get(TAG_JOB, 10**9))
    except ValueError:
        return 10**9


def choice_value(run: Run, key: str) -> str | None:
    """A run's value for a choice: its Hydra override if recorded, else the logged param."""
    overrides = override_values(json.loads(run.data.tags.get(TAG_OVERRIDES, "[]")))
    if key in overrides:
        return overrides[key]
    params = run.data.params
    return params.get(key, params.get(f"{key}.name"))


def comparison_table(runs: Sequence[Run], varied: Sequence[str] = ()) -> pd.DataFrame:
    """One row per job run: the choices that vary, Δr with interval and p per target, coverage, oracle, status."""
    runs = [r for r in runs if r.data.tags.get(TAG_ROLE) != "confirmation"]  # not a row: see confirmation.py
    choice_keys = [k.lstrip("+~") for k in varied]
    for key in CORE_CHOICES:
        values = {v for r in runs if (v := choice_value(r, key)) is not None}
        if key not in choice_keys and (len(values) > 1 or key == "strength"):
            choice_keys.append(key)
    rows = []
    for run in runs:
        row: dict[str, object] = {"job": _job_num(run) if _job_num(run) < 10**9 else None}
        row["run_name"] = run.info.run_name
        for key in choice_keys:
            row[key] = choice_value(run, key)
        for name in [*metric_columns(), *RUN_METRICS]:
            row[name] = run.data.metrics.get(name, math.nan)
        row["eval_split"] = run.data.params.get("data.eval_split", "")
        row["oracle"] = run.data.tags.get("oracle", "")
        row["status"] = run.info.status
        row["error"] = run.data.tags.get("sweep_error", "")
        row["run_id"] = run.info.run_id
        rows.append(row)
    table = pd.DataFrame(rows, columns=table_columns(choice_keys))
    if "strength" in table and table["strength"].notna().any():
        table["strength"] = pd.to_numeric(table["strength"], errors="coerce")
    return multiplicity.add_adjusted_columns(without_absent(table))


def scored_on(table: pd.DataFrame) -> str:
    """``Rows were scored on `val` (n = 182 clips each).``: the split and n of the finished rows."""
    finished = table[table["status"] == "FINISHED"] if "status" in table else table
    splits = sorted({str(v) for v in finished.get("eval_split", pd.Series(dtype=object)).dropna() if str(v)})
    counts = pd.to_numeric(finished.get("n_eval", pd.Series(dtype=float)), errors="coerce").dropna()
    ns = sorted({int(v) for v in counts})
    where = f"the `{'`, `'.join(splits)}` split" if splits else "an unrecorded split"
    if len(ns) == 1:
        return f"Rows were scored on {where} (n = {ns[0]} clips each)."
    many = f"n = {ns[0]} to {ns[-1]} clips" if ns else "n not recorded"
    return f"Rows were scored on {where} ({many})."


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-style Markdown table in the shared number formats (steering.sweep.formats)."""
    return formats.to_markdown(table)


def describe(table: pd.DataFrame, sweep_id: str, notes: Sequence[str] = (), sections: Sequence[str] = ()) -> str:
    """Markdown document: a heading, the oracle and selection notes, the table (without run ids), the
    multiplicity section and any further ``sections`` (lines: contrasts, steerability)."""
    shown = table.drop(columns=[c for c in ("run_id", "error") if c in table and not table[c].astype(bool).any()])
    shown = shown.drop(columns=["run_id"], errors="ignore")
    lines = [f"# Sweep {sweep_id}", ""]
    n_failed = int((table["status"] != "FINISHED").sum()) if len(table) else 0
    lines.append(f"{len(table)} configurations, {n_failed} not finished. {scored_on(table)}")
    lines.append("Δr valence and Δr arousal are the two targets, not splits. Δr = r(steered) − r(baseline);")
    lines.append(f"intervals are paired-bootstrap 95% CIs, p the {FAMILY_P_LABEL} (Williams' p secondary).")
    lines.append("Every row is one run: one strength for both targets.")
    if (table.get("oracle") == "true").any():
        lines.append("Rows with oracle = true chose signals from the evaluated samples' own ratings.")
    lines += [*notes, "", to_markdown(shown), *multiplicity.describe_family(table), ""]
    if sections:
        lines += [*sections, ""]
    return "\n".join(lines)


def write_outputs(
    table: pd.DataFrame,
    sweep_id: str,
    out_dir: str | Path,
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
    preset: str | None = None,
    varied: Sequence[str] = (),
    fixed: Mapping[str, str] | None = None,
    shapes: Sequence[object] = (),
    contrasts: pd.DataFrame | None = None,
) -> list[Path]:
    """comparison.csv, comparison.md and a figure in ``out_dir``: strength_response.png when strength
    varies, forest.png otherwise; ledger.png (steering.sweep.ledger_figure) and, when rows steer toward fixed
    categories, steering_map.png."""
    from steering.sweep import figures, ledger_figure, steering_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(describe(table, sweep_id, notes, sections))
    paths = [out / "comparison.csv", out / "comparison.md"]
    context = figures.FigureContext(sweep_id, preset, list(varied), dict(fixed or {}), list(shapes), contrasts)
    figure = figures.strength_figure(table, out / "strength_response.png", context)
    if figure is None:
        figure = figures.forest_figure(table, out / "forest.png", context)
    if figure is not None:
        paths.append(figure)
    paths += steering_map.write_map(table, out / "steering_map.png", context)
    paths += [p for p in [ledger_figure.ledger_figure(table, out / "ledger.png", context)] if p is not None]
    return paths


def fixed_choices(runs: Sequence[Run], keys: Sequence[str] = CORE_CHOICES) -> dict[str, str]:
    """Choices with one value across all ``runs`` (the part of the configuration a sweep did not vary)."""
    runs = [r for r in runs if r.data.tags.get(TAG_ROLE) != "confirmation"]
    fixed = {}
    for key in keys:
        values = {choice_value(r, key) for r in runs}
        if len(values) == 1 and None not in values:
            fixed[key] = str(values.pop())
    return fixed


def compare_sweeps(a: pd.DataFrame, b: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Δr of sweep B minus sweep A, row by row, for configurations present in both.

    Rows are matched on ``keys``; by default every choice column that varies in either table (both
    tables need those columns: see :func:`compare_runs`). Both sides keep their run ids.
    """
    if keys is None:
        shared = [c for c in choice_columns(a) if c in b.columns]
        keys = [c for c in shared if a[c].nunique(dropna=False) > 1 or b[c].nunique(dropna=False) > 1]
    keys = list(keys) or ["job"]
    value_cols = [f"dr_{t}{s}" for t in TARGETS for s in ("", "_ci_low", "_ci_high", "_p")]

    def side(table: pd.DataFrame) -> pd.DataFrame:
        frame = table[[*keys, *value_cols, "status", "run_id"]].copy()
        for k in keys:
            if k != "strength" or not pd.api.types.is_numeric_dtype(frame[k]):
                frame[k] = frame[k].astype(str)
        return frame

    merged = side(a).merge(side(b), on=keys, suffixes=("_a", "_b"), how="inner")
    for t in TARGETS:
        merged[f"diff_dr_{t}"] = merged[f"dr_{t}_b"] - merged[f"dr_{t}_a"]
    ordered = [*keys]
    for t in TARGETS:
        ordered += [f"dr_{t}_a", f"dr_{t}_b", f"diff_dr_{t}", f"dr_{t}_p_a", f"dr_{t}_p_b"]
    return merged[[*ordered, "status_a", "status_b", "run_id_a", "run_id_b"]]


@dataclass
class Comparison:
    """Two sweeps matched row by row (see :func:`compare_runs`)."""

    table: pd.DataFrame
    keys: list[str]
    rows_a: int
    rows_b: int
    #: Choices fixed within each sweep but different between them (what the comparison is about).
    differences: dict[str, tuple[str, str]]
    #: Choices that vary in one sweep but are absent from the other (not matched on).
    unmatched_keys: list[str]

    def header(self, first: str, second: str) -> str:
        lines = [
            f"# Sweep {second} minus sweep {first}",
            "",
            f"{len(self.table)} matching configurations ({self.rows_a} rows in {first}, {self.rows_b} in {second}),"
            f" matched on: {', '.join(self.keys)}.",
        ]
        if self.differences:
            lines.append(
                "Fixed in each sweep but different: "
                + "; ".join(f"{k} {va} → {vb}" for k, (va, vb) in self.differences.items())
                + "."
            )
        if self.unmatched_keys:
            lines.append(f"Not matched on (missing in one sweep): {', '.join(self.unmatched_keys)}.")
        return "\n".join(textwrap.fill(line, 100) if line else line for line in lines)


def compare_runs(a: SweepRuns, b: SweepRuns) -> Comparison:
    """Match two sweeps on every choice that varies in either of them; keep both sides' run ids."""
    first, second = comparison_table(a.children, a.varied), comparison_table(b.children, b.varied)
    varying = list(
        dict.fromkeys(c for t in (first, second) for c in choice_columns(t) if t[c].nunique(dropna=False) > 1)
    )
    first, second = comparison_table(a.children, varying), comparison_table(b.children, varying)
    keys = [k for k in varying if first[k].notna().any() and second[k].notna().any()]
    fixed_a, fixed_b = fixed_choices(a.children), fixed_choices(b.children)
    differences = {
        k: (fixed_a[k], fixed_b[k]) for k in fixed_a if k in fixed_b and k not in keys and fixed_a[k] != fixed_b[k]
    }
    table = compare_sweeps(first, second, keys)
    unmatched = [k for k in varying if k not in keys]
    return Comparison(table, keys or ["job"], len(first), len(second), differences, unmatched)
