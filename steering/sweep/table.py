"""Comparison tables and strength-response figures from a sweep's MLflow runs.

Shared by the sweep callback (at the end of a sweep) and ``python -m steering.report`` (any time later),
so a rebuilt table is the same table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steering.sweep import multiplicity

log = logging.getLogger(__name__)

TARGETS = ("valence", "arousal")
#: Choices shown as columns whenever they differ between the rows (besides the swept keys).
CORE_CHOICES = ("binning", "pathway", "layer", "method", "category", "strength")
METRIC_COLUMNS = tuple(
    f"{stat}_{t}" if stat.startswith("r_") else f"dr_{t}{stat}"
    for t in TARGETS
    for stat in ("r_base", "r_steered", "", "_ci_low", "_ci_high", "_p")
)
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
        raise LookupError(f"no MLflow runs for sweep {sweep_id!r}")
    ordered = sorted(children.values(), key=lambda r: (_job_num(r), r.info.start_time or 0))
    return SweepRuns(sweep_id, parent, ordered)


def latest_sweep_id(client: MlflowClient, preset: str | None = None, experiment: str | None = None) -> str:
    """The newest sweep, optionally of one experiment preset (``+experiment=NAME``) or MLflow experiment."""
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise LookupError(f"no MLflow experiment named {experiment!r}")
        ids = [exp.experiment_id]
    else:
        ids = all_experiment_ids(client)
    query = f"tags.{TAG_ROLE} = 'parent'" + (f" and tags.{TAG_PRESET} = '{preset}'" if preset else "")
    runs = client.search_runs(ids, query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError("no sweep found" + (f" for experiment preset {preset!r}" if preset else ""))
    return runs[0].data.tags[TAG_SWEEP_ID]


def _job_num(run: Run) -> int:
    try:
        return int(run.data.tags.get(TAG_JOB, 10**9))
    except ValueError:
        return 10**9


def override_values(overrides: Iterable[str]) -> dict[str, str]:
    """``["+approach=x", "strength=1"]`` -> ``{"approach": "x", "strength": "1"}``."""
    values = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    return values


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
        for name in METRIC_COLUMNS:
            row[name] = run.data.metrics.get(name, math.nan)
        row["coverage"] = run.data.metrics.get("coverage", math.nan)
        row["oracle"] = run.data.tags.get("oracle", "")
        row["status"] = run.info.status
        row["error"] = run.data.tags.get("sweep_error", "")
        row["run_id"] = run.info.run_id
        rows.append(row)
    columns = ["job", "run_name", *choice_keys, *METRIC_COLUMNS, "coverage", "oracle", "status", "error", "run_id"]
    table = pd.DataFrame(rows, columns=columns)
    if "strength" in table and table["strength"].notna().any():
        table["strength"] = pd.to_numeric(table["strength"], errors="coerce")
    return multiplicity.add_adjusted_columns(table)


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-style markdown table (no extra dependency); numbers rounded, NaN as blank."""

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            small = value != 0 and abs(value) < 1e-3
            return f"{value:.{digits}g}" if abs(value) >= 1e4 or small else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def describe(table: pd.DataFrame, sweep_id: str, notes: Sequence[str] = (), sections: Sequence[str] = ()) -> str:
    """Markdown document: a heading, the oracle and selection notes, the table (without run ids), the
    multiplicity section and any further ``sections`` (lines: contrasts, steerability)."""
    shown = table.drop(columns=[c for c in ("run_id", "error") if c in table and not table[c].astype(bool).any()])
    shown = shown.drop(columns=["run_id"], errors="ignore")
    lines = [f"# Sweep {sweep_id}", ""]
    n_failed = int((table["status"] != "FINISHED").sum()) if len(table) else 0
    lines.append(f"{len(table)} configurations, {n_failed} not finished. Δr = r(steered) − r(baseline);")
    lines.append("intervals are paired-bootstrap 95% CIs, p from Williams' t.")
    lines.append("Every row is one run: one strength for both targets.")
    if (table.get("oracle") == "true").any():
        lines.append("Rows with oracle = true chose signals from the evaluated samples' own ratings.")
    lines += [*notes, "", to_markdown(shown), *multiplicity.describe_family(table), ""]
    if sections:
        lines += [*sections, ""]
    return "\n".join(lines)


def strength_figure(table: pd.DataFrame, path: str | Path) -> Path | None:
    """Δr against strength with CI bands, one panel per target, one line per other configuration."""
    if "strength" not in table or table["strength"].nunique(dropna=True) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[table["status"] == "FINISHED"].dropna(subset=["strength"])
    fixed = {"job", "run_name", "strength", "oracle", "status", "error", "run_id", "coverage", *METRIC_COLUMNS}
    fixed |= set(multiplicity.ADJUSTED_COLUMNS)
    group_keys = [c for c in data.columns if c not in fixed and data[c].nunique(dropna=False) > 1]
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(11, 4.2), sharex=True)
    groups = data.groupby(group_keys, dropna=False) if group_keys else [((), data)]
    for key, group in groups:
        group = group.sort_values("strength")
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(group_keys, key)) or "Δr"
        for ax, t in zip(axes, TARGETS):
            (line,) = ax.plot(group["strength"], group[f"dr_{t}"], marker="o", label=label)
            ax.fill_between(
                group["strength"], group[f"dr_{t}_ci_low"], group[f"dr_{t}_ci_high"], color=line.get_color(), alpha=0.2
            )
    for ax, t in zip(axes, TARGETS):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=min(0.0, float(data["strength"].min())))  # no empty negative decades
        ax.set_xlabel("strength")
        ax.set_ylabel(f"Δr {t} (95% CI)")
        ax.set_title(t)
    axes[-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    table: pd.DataFrame, sweep_id: str, out_dir: str | Path, notes: Sequence[str] = (), sections: Sequence[str] = ()
) -> list[Path]:
    """comparison.csv, comparison.md and (when strength varies) strength_response.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(describe(table, sweep_id, notes, sections))
    paths = [out / "comparison.csv", out / "comparison.md"]
    figure = strength_figure(table, out / "strength_response.png")
    if figure is not None:
        paths.append(figure)
    return paths


def compare_sweeps(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Δr of sweep B minus sweep A for configurations present in both (matched on their shared choices)."""
    meta = {"job", "run_name", "oracle", "status", "error", "run_id", "coverage", *METRIC_COLUMNS}
    meta |= set(multiplicity.ADJUSTED_COLUMNS)
    keys = [c for c in a.columns if c in b.columns and c not in meta]
    if not keys:
        keys = ["run_name"]
    value_cols = [f"dr_{t}{s}" for t in TARGETS for s in ("", "_ci_low", "_ci_high", "_p")]
    left = a[[*keys, *value_cols, "status"]].astype({k: str for k in keys})
    right = b[[*keys, *value_cols, "status"]].astype({k: str for k in keys})
    merged = left.merge(right, on=keys, suffixes=("_a", "_b"), how="inner")
    for t in TARGETS:
        merged[f"diff_dr_{t}"] = merged[f"dr_{t}_b"] - merged[f"dr_{t}_a"]
    ordered = [*keys]
    for t in TARGETS:
        ordered += [f"dr_{t}_a", f"dr_{t}_b", f"diff_dr_{t}", f"dr_{t}_p_a", f"dr_{t}_p_b"]
    return merged[[*ordered, "status_a", "status_b"]]
