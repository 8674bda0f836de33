"""``python -m steering.results DIR [DIR ...]``: log result directories of steering runs to MLflow.

A job whose MLflow logging failed left its results on disk (``steering.tracking.results``); this
app logs them without recomputing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """``python -m steering.results DIR [DIR ...]``: log result directories to MLflow."""
    from steering.tracking.results import sync

    parser = argparse.ArgumentParser(prog="python -m steering.results", description=main.__doc__)
    parser.add_argument("directories", nargs="+", type=Path, help="output directories of steering runs")
    parser.add_argument("--tracking-uri", help="log there instead of the URI recorded in run.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for directory in args.directories:
        print(f"{directory}: run {sync(directory, args.tracking_uri)}")
    return 0


if __name__ == "__main__":
    from steering.cli import run_app

    run_app(lambda: sys.exit(main()))
