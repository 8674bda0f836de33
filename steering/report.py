"""``python -m steering.report``: a sweep's comparison table and figures, rebuilt from MLflow.

python -m steering.report sweep=20260101-120000-abc123
python -m steering.report preset=approaches              # latest sweep of +experiment=approaches
python -m steering.report mlflow_experiment=steering     # latest sweep in that MLflow experiment
python -m steering.report compare=[ID1,ID2]              # Δr(ID2) - Δr(ID1) per configuration
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from steering.config import config_dir

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from steering.sweep import table as tbl

# pandas, MLflow and the sweep modules load inside the functions, after composition: --help stays fast.

log = logging.getLogger("steering.report")


def sweep_table(client: MlflowClient, sweep_id: str) -> tuple[tbl.SweepRuns, pd.DataFrame]:
    from steering.sweep import table as tbl

    runs = tbl.find_sweep(client, sweep_id)
    return runs, tbl.comparison_table(runs.children, runs.varied)


def report_sweep(client: MlflowClient, sweep_id: str, out: Path, log_to_parent: bool = False) -> pd.DataFrame:
    """Write comparison.csv/.md (and the strength figure) for one sweep into ``out/<sweep_id>``."""
    from steering.sweep import confirmation as conf
    from steering.sweep import table as tbl
    from steering.sweep.analysis import write_analyses
    from steering.sweep.contrasts import bootstrap_settings

    runs, table = sweep_table(client, sweep_id)
    finished = [r for r in runs.children if r.info.status == "FINISHED"]
    bootstrap = bootstrap_settings(finished[0].data.params if finished else {})
    analyses = write_analyses(client, table, out / sweep_id, bootstrap)
    notes = conf.selection_notes(runs.children, len(table))
    paths = tbl.write_outputs(table, sweep_id, out / sweep_id, notes, analyses.sections) + analyses.paths
    confirmation = conf.rebuild_confirmation(runs.children, table, runs.varied)
    if confirmation is not None:
        confirmation.to_csv(out / sweep_id / "confirmation.csv", index=False)
        paths.append(out / sweep_id / "confirmation.csv")
    if log_to_parent and runs.parent is not None:
        for path in paths:
            client.log_artifact(runs.parent.info.run_id, str(path), "report")
    print(tbl.describe(table, sweep_id))
    print(f"written: {', '.join(str(p) for p in paths)}")
    return table


def report_compare(client: MlflowClient, first: str, second: str, out: Path) -> pd.DataFrame:
    """Δr differences (second minus first) for configurations that both sweeps ran."""
    from steering.sweep import table as tbl

    _, a = sweep_table(client, first)
    _, b = sweep_table(client, second)
    diff = tbl.compare_sweeps(a, b)
    target = out / f"compare_{first}_vs_{second}"
    target.mkdir(parents=True, exist_ok=True)
    diff.to_csv(target / "comparison_diff.csv", index=False)
    text = f"# Sweep {second} minus sweep {first}\n\n{len(diff)} matching configurations.\n\n{tbl.to_markdown(diff)}"
    (target / "comparison_diff.md").write_text(text)
    print(text)
    print(f"written: {target}")
    return diff


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="report")
def main(cfg: DictConfig) -> None:
    from mlflow.tracking import MlflowClient

    from steering.sweep import table as tbl

    client = MlflowClient(str(cfg.tracking.uri))
    out = Path(cfg.out)
    if cfg.compare:
        if len(cfg.compare) != 2:
            raise SystemExit(f"compare needs two sweep ids, got {list(cfg.compare)}")
        report_compare(client, str(cfg.compare[0]), str(cfg.compare[1]), out)
        return
    sweep_id = cfg.sweep or tbl.latest_sweep_id(client, preset=cfg.preset, experiment=cfg.mlflow_experiment)
    report_sweep(client, str(sweep_id), out, bool(cfg.log_to_parent))


if __name__ == "__main__":
    main()
