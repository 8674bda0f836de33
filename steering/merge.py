"""``steering-merge DIR [DIR ...]``: the runs of ``tracking=offline`` jobs into the main MLflow store.

Jobs on compute nodes without a route to a tracking server log to their own SQLite stores
(``conf/tracking/offline.yaml``); this app copies them, once the job directories are back on a machine
that reaches the main store, with each sweep's parent run and comparison table (docs/hpc.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

#: Where runs go without --tracking-uri: $MLFLOW_TRACKING_URI, else tracking=local's store from here.
DEFAULT_STORE = "mlflow.db"


def default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / DEFAULT_STORE}"


def main(argv: list[str] | None = None) -> int:
    """Merge the offline stores of sweeps and runs (at or below each DIR) into the main MLflow store."""
    from steering.sweep.merge import merge
    from steering.tracking.links import how_to_open

    parser = argparse.ArgumentParser(prog="steering-merge", description=main.__doc__)
    parser.add_argument("directories", nargs="+", type=Path, help="sweep or run directories of tracking=offline")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="the main store (default: $MLFLOW_TRACKING_URI, else sqlite:///<this directory>/mlflow.db, "
        "the store of tracking=local started here)",
    )
    parser.add_argument("--experiment", help="merge into this MLflow experiment (default: the runs' own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # MLflow would print a link per run it ends on a server; the merge prints the parent's link itself.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = args.tracking_uri or default_uri()
    cache = os.environ.get("STEERING_CACHE_DIR") or str(Path.cwd() / ".cache" / "steering")
    for merged in merge(args.directories, uri, args.experiment, cache):
        what = f"sweep {merged.sweep_id}" if merged.sweep_id else "runs"
        print(f"{merged.directory}: {what}: {len(merged.copies)} run(s), {merged.new} newly merged into {uri}")
        for note in merged.notes:
            print(f"  {note}")
        if merged.parent_run_id and merged.experiment_id:
            print("  parent run: " + how_to_open(uri, merged.experiment_id, merged.parent_run_id))
        if merged.report is not None:
            print(f"  table: {merged.report}")
    return 0


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2)."""
    from steering.cli import run_app
    from steering.tracking.preflight import tracking_environment

    tracking_environment()  # before MLflow is imported: it decides on telemetry at import
    run_app(lambda: sys.exit(main()))


if __name__ == "__main__":
    cli()
