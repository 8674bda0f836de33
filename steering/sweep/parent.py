"""What a sweep's parent run shows in the MLflow UI: fixed configuration, what varied, summary, description.

- params: every job param with one value across the sweep (the fixed part of the configuration);
- tags: ``sweep_varied_values`` (readable: ``method: lrm, bypass; strength: 0, 1``), ``sweep_varied_params``
  (JSON list of the params that differ), ``best_dr_<target>_row``;
- metrics: ``n_jobs``, ``n_failed``, ``best_dr_<target>``;
- description (``mlflow.note.content``): the comparison table in Markdown, cut to MLflow's tag limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from steering.sweep import formats
from steering.sweep.columns import choice_columns, varying_choices
from steering.sweep.confirmation import confirmed_lines, rebuild_confirmation
from steering.sweep.table import TAG_ROLE, SweepRuns, scored_on
from steering.sweep.ties import describe_shapes, response_shapes
from steering.vocab import TARGETS

NOTE_TAG = "mlflow.note.content"
MAX_TAG = 8000  # MLflow's limit on a tag value
BATCH = 100  # MLflow's limit on params/tags per log_batch


def fixed_params(children: Sequence) -> tuple[dict[str, str], list[str]]:
    """Params with one value in every job that logged params, and the names of those that differ."""
    logged = [c.data.params for c in children if c.data.params]
    if not logged:
        return {}, []
    names = sorted(set().union(*logged))
    fixed, varied = {}, []
    for name in names:
        values = {p.get(name) for p in logged}
        if len(values) == 1 and None not in values:
            fixed[name] = values.pop()
        else:
            varied.append(name)
    return fixed, varied


def varied_values(table: pd.DataFrame) -> str:
    """``method: lrm, bypass; strength: 0, 0.5`` for the choice columns that differ between rows."""
    parts = []
    for column in choice_columns(table):
        values = list(dict.fromkeys(formats.format_cell(column, v) for v in table[column].tolist()))
        if len(values) > 1:
            parts.append(f"{column}: {', '.join(values)}")
    return "; ".join(parts)


def row_label(row: pd.Series, table: pd.DataFrame) -> str:
    keys = varying_choices(table)
    label = ", ".join(f"{k}={formats.format_cell(k, row[k])}" for k in keys) or str(row.get("run_name"))
    return f"job {formats.format_cell('job', row.get('job'))}: {label} (run {row.get('run_id')})"


def best_rows(table: pd.DataFrame) -> dict[str, pd.Series]:
    """The finished row with the largest Δr, per target."""
    done = table[table["status"] == "FINISHED"] if "status" in table else table
    best = {}
    for t in TARGETS:
        values = pd.to_numeric(done.get(f"dr_{t}"), errors="coerce") if len(done) else pd.Series(dtype=float)
        if values is not None and values.notna().any():
            best[t] = done.loc[values.idxmax()]
    return best


def note(table: pd.DataFrame, sweep_id: str, header: str = "") -> str:
    """A compact Markdown description: what varied, the best rows and one line per job."""
    columns = ["job", *varying_choices(table)]
    compact = table[columns].copy()
    for t in TARGETS:
        compact[f"Δr {t} [95% CI]"] = [
            ""
            if formats.is_missing(r.get(f"dr_{t}"))
            else f"{formats.format_cell(f'dr_{t}', r.get(f'dr_{t}'))} "
            f"[{formats.format_cell(f'dr_{t}', r.get(f'dr_{t}_ci_low'))}, "
            f"{formats.format_cell(f'dr_{t}', r.get(f'dr_{t}_ci_high'))}]"
            for _, r in table.iterrows()
        ]
        compact[f"p {t}"] = [formats.format_cell("p", r.get(f"dr_{t}_p")) for _, r in table.iterrows()]
    for extra in ("oracle", "status"):
        if extra in table:
            compact[extra] = table[extra].astype(str)
    lines = [f"### Sweep {sweep_id}", ""]
    if header:
        lines += [header, ""]
    for t, row in best_rows(table).items():
        lines.append(f"- best Δr {t}: {formats.format_cell('dr', row[f'dr_{t}'])}, {row_label(row, table)}")
    lines += ["", "Full table (with r, intervals and every column): artifact comparison.md / comparison.csv.", ""]
    text = "\n".join(lines)
    body = formats.to_markdown(compact.astype(object)).splitlines()
    kept = body[:2]
    for line in body[2:]:
        if len(text) + sum(len(x) + 1 for x in kept) + len(line) > MAX_TAG - 200:
            kept.append(f"| … {len(body) - len(kept)} more rows in comparison.md |")
            break
        kept.append(line)
    return text + "\n".join(kept) + "\n"


def description_lead(runs: SweepRuns, table: pd.DataFrame) -> str:
    """The description's first lines: the confirmed figures on the held-out split (when the sweep confirmed
    its choice; those are the figures to report), the split and n the rows were scored on, and flat or step
    strength responses."""
    confirmed = confirmed_lines(rebuild_confirmation(runs.children, table, runs.varied))
    confirmed = [f"- {line.strip()}" if line.startswith("  ") else f"**{line}**" for line in confirmed]
    shapes = describe_shapes(response_shapes(table))  # a flat or step response has no best row to report
    return "\n".join([*confirmed, *([""] if confirmed else []), scored_on(table), *shapes])


def annotate_parent(client: MlflowClient, run_id: str, runs: SweepRuns, table: pd.DataFrame, sweep_id: str) -> None:
    """Log params, tags, summary metrics and the description of a sweep's parent run."""
    jobs = [c for c in runs.children if c.data.tags.get(TAG_ROLE) != "confirmation"]  # the table's rows
    fixed, varied = fixed_params(jobs)
    existing = set(client.get_run(run_id).data.params)
    params = [Param(k, str(v)[:6000]) for k, v in fixed.items() if k not in existing]
    tags = {
        "sweep_varied_values": varied_values(table)[:MAX_TAG],
        "sweep_varied_params": json.dumps(varied)[:MAX_TAG],
        NOTE_TAG: note(table, sweep_id, description_lead(runs, table)),
    }
    finished = int((table["status"] == "FINISHED").sum()) if len(table) else 0
    metrics = {"n_jobs": float(len(table)), "n_failed": float(len(table) - finished)}
    for t, row in best_rows(table).items():
        metrics[f"best_dr_{t}"] = float(row[f"dr_{t}"])
        tags[f"best_dr_{t}_row"] = row_label(row, table)[:MAX_TAG]
    now = int(pd.Timestamp.now().timestamp() * 1000)
    metric_list = [Metric(k, v, now, 0) for k, v in metrics.items() if math.isfinite(v)]
    tag_list = [RunTag(k, v) for k, v in tags.items()]
    client.log_batch(run_id, metrics=metric_list, tags=tag_list)
    # the jobs' dataset inputs (the feature file), so the parent's row in the runs list names it too
    inputs = {}
    for child in jobs:
        for dataset_input in getattr(child.inputs, "dataset_inputs", None) or []:
            inputs.setdefault((dataset_input.dataset.name, dataset_input.dataset.digest), dataset_input)
    if inputs:
        client.log_inputs(run_id, datasets=list(inputs.values()))
    for start in range(0, len(params), BATCH):
        client.log_batch(run_id, params=params[start : start + BATCH])
