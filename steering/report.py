"""``python -m steering.report``: a sweep's comparison table and figures, rebuilt from MLflow.

python -m steering.report sweep=20260101-120000-abc123
python -m steering.report preset=approaches              # latest sweep of +experiment=approaches
python -m steering.report mlflow_experiment=steering     # latest sweep in that MLflow experiment
python -m steering.report compare=[ID1,ID2]              # Δr(ID2) - Δr(ID1) per configuration

The terminal shows a view that fits 100 columns; the full tables are in the CSV and Markdown files.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from steering.cli import hydra_app, run_app
from steering.config.schema import ReportConfig

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from steering.sweep import table as tbl

# pandas, MLflow and the sweep modules load inside the functions, after composition: --help stays fast.

log = logging.getLogger("steering.report")

TERMINAL_WIDTH = 100


def sweep_table(client: MlflowClient, sweep_id: str) -> tuple[tbl.SweepRuns, pd.DataFrame]:
    from steering.sweep import table as tbl

    runs = tbl.find_sweep(client, sweep_id)
    return runs, tbl.comparison_table(runs.children, runs.varied)


def terminal_summary(table: pd.DataFrame, sweep_id: str) -> str:
    """The Markdown document's heading lines and a table that fits the terminal."""
    from steering.sweep import formats
    from steering.sweep import table as tbl

    head = tbl.describe(table, sweep_id).split("\n\n| ")[0]
    choices = [c for c in tbl.choice_columns(table) if table[c].nunique(dropna=False) > 1]
    return f"{head}\n\n{formats.terminal_view(table, choices, TERMINAL_WIDTH)}"


def report_sweep(client: MlflowClient, sweep_id: str, out: Path, log_to_parent: bool = False) -> pd.DataFrame:
    """Write comparison.csv/.md, the figure and the analyses for one sweep into ``out/<sweep_id>``."""
    from steering.sweep import confirmation as conf
    from steering.sweep import table as tbl
    from steering.sweep.analysis import write_analyses
    from steering.sweep.contrasts import bootstrap_settings

    runs, table = sweep_table(client, sweep_id)
    finished = [r for r in runs.children if r.info.status == "FINISHED"]
    bootstrap = bootstrap_settings(finished[0].data.params if finished else {})
    analyses = write_analyses(client, table, out / sweep_id, bootstrap)
    notes = conf.selection_notes(runs.children, len(table))
    preset = runs.parent.data.tags.get(tbl.TAG_PRESET) if runs.parent is not None else None
    fixed = tbl.fixed_choices(runs.children)
    paths = tbl.write_outputs(
        table, sweep_id, out / sweep_id, notes, analyses.sections, preset=preset, varied=runs.varied, fixed=fixed
    )
    paths += analyses.paths
    confirmation = conf.rebuild_confirmation(runs.children, table, runs.varied)
    if confirmation is not None:
        confirmation.to_csv(out / sweep_id / "confirmation.csv", index=False)
        paths.append(out / sweep_id / "confirmation.csv")
    if log_to_parent and runs.parent is not None:
        for path in paths:
            client.log_artifact(runs.parent.info.run_id, str(path), "report")
    print(terminal_summary(table, sweep_id))
    print(f"\nfull table, figure and analyses: {', '.join(str(p) for p in paths)}")
    return table


def report_compare(client: MlflowClient, first: str, second: str, out: Path) -> pd.DataFrame:
    """Δr differences (second minus first) for configurations that both sweeps ran."""
    from steering.sweep import formats
    from steering.sweep import table as tbl

    comparison = tbl.compare_runs(tbl.find_sweep(client, first), tbl.find_sweep(client, second))
    diff = comparison.table
    target = out / f"compare_{first}_vs_{second}"
    target.mkdir(parents=True, exist_ok=True)
    diff.to_csv(target / "comparison_diff.csv", index=False)
    header = comparison.header(first, second)
    (target / "comparison_diff.md").write_text(f"{header}\n\n{tbl.to_markdown(diff)}")
    columns = [*comparison.keys]
    names = [*comparison.keys]
    for t in tbl.TARGETS:
        columns += [f"dr_{t}_a", f"dr_{t}_b", f"diff_dr_{t}"]
        names += [f"Δr {t[:3]} A", f"Δr {t[:3]} B", f"B−A {t[:3]}"]
    print(f"{header}\nA = {first}, B = {second}\n")
    print(formats.text_table(diff, columns, TERMINAL_WIDTH, names))
    print(f"\nfull table (with p values and both run ids): {target / 'comparison_diff.csv'}, comparison_diff.md")
    return diff


def _fail(what: str, problem: str) -> None:
    """The one-line ``error: <what>: <problem>`` of every app (a listing may follow), exit 2."""
    print(f"error: {what}: {problem}", file=sys.stderr)
    sys.exit(2)


@hydra_app("report")
def main(cfg: ReportConfig) -> None:
    from mlflow.tracking import MlflowClient

    from steering.sweep import table as tbl
    from steering.sweep.logs import route_mlflow_logging
    from steering.tracking.preflight import check_tracking

    route_mlflow_logging()
    check_tracking(str(cfg.tracking.uri))
    client = MlflowClient(str(cfg.tracking.uri))
    out = Path(cfg.out)
    try:
        if cfg.compare:
            if len(cfg.compare) != 2:
                _fail("compare", f"needs two sweep ids, e.g. compare=[ID1,ID2]; got {list(cfg.compare)}")
            report_compare(client, str(cfg.compare[0]), str(cfg.compare[1]), out)
            return
        sweep_id = cfg.sweep or tbl.latest_sweep_id(client, preset=cfg.preset, experiment=cfg.mlflow_experiment)
        report_sweep(client, str(sweep_id), out, bool(cfg.log_to_parent))
    except tbl.SweepNotFound as err:
        _fail(f"tracking store {cfg.tracking.uri}", f"{err.message}; it has:\n{err.listing}")


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    run_app(main)


if __name__ == "__main__":
    cli()
