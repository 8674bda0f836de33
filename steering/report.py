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

from steering.cli import hydra_app, run_app
from steering.config.schema import ReportConfig
from steering.tracking.preflight import tracking_environment

# pandas, MLflow and the sweep modules load inside main, after composition: --help stays fast.

log = logging.getLogger("steering.report")


def _fail(what: str, problem: str) -> None:
    """The one-line ``error: <what>: <problem>`` of every app (a listing may follow), exit 2."""
    print(f"error: {what}: {problem}", file=sys.stderr)
    sys.exit(2)


@hydra_app("report")
def main(cfg: ReportConfig) -> None:
    from mlflow.tracking import MlflowClient

    from steering.sweep import table as tbl
    from steering.sweep.report import report_compare, report_sweep
    from steering.tracking.mlflow_logs import route_mlflow_logging
    from steering.tracking.preflight import check_tracking

    route_mlflow_logging()
    check_tracking(str(cfg.tracking.uri))
    client = MlflowClient(str(cfg.tracking.uri))
    out = Path(cfg.out)
    try:
        if cfg.compare:
            if len(cfg.compare) != 2:
                _fail("compare", f"needs two sweep ids, e.g. compare=[ID1,ID2]; got {list(cfg.compare)}")
            print(report_compare(client, str(cfg.compare[0]), str(cfg.compare[1]), out).text)
            return
        sweep_id = cfg.sweep or tbl.latest_sweep_id(client, preset=cfg.preset, experiment=cfg.mlflow_experiment)
        print(report_sweep(client, str(sweep_id), out, bool(cfg.log_to_parent)).text)
    except tbl.SweepNotFound as err:
        _fail(f"tracking store {cfg.tracking.uri}", f"{err.message}; it has:\n{err.listing}")


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    tracking_environment()  # before MLflow is imported: it decides on telemetry at import
    run_app(main)


if __name__ == "__main__":
    cli()
