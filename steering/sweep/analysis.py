"""Sweep-level analyses beyond the comparison table, from the child runs' predictions.

- ``contrasts.csv`` when the rows vary ``category`` (conditions minus controls, steering.sweep.contrasts),
- ``steerability.csv``, ``steerability_summary.csv`` and ``steerability.png`` when strength varies
  (steering.sweep.steerability).

Used by the sweep callback at the end of a sweep and by ``python -m steering.report``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from steering.sweep import contrasts as ctr
from steering.sweep import steerability as steer
from steering.sweep.figures import scored
from steering.sweep.predictions import load_predictions

log = logging.getLogger(__name__)


@dataclass
class Analyses:
    """Files written, markdown sections for comparison.md, summary metrics for the parent run."""

    paths: list[Path] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    #: contrasts.csv's rows (conditions minus controls), for the forest figure; None when not computed.
    contrasts: pd.DataFrame | None = None


def _varies(table: pd.DataFrame, column: str) -> bool:
    finished = table[table["status"] == "FINISHED"]
    return column in finished and finished[column].nunique(dropna=True) > 1


def write_analyses(
    client: MlflowClient, table: pd.DataFrame, out_dir: str | Path, bootstrap: Mapping[str, float | int]
) -> Analyses:
    """Every analysis that applies to ``table``; one that fails is logged and skipped (the table still stands)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = Analyses()
    loaded: dict[str, pd.DataFrame] = {}

    def load(run_id: str) -> pd.DataFrame:
        if run_id not in loaded:
            loaded[run_id] = load_predictions(client, run_id)
        return loaded[run_id]

    if _varies(table, "category"):
        try:
            contrasts = ctr.contrasts_table(
                table,
                load,
                resamples=int(bootstrap["resamples"]),
                confidence=float(bootstrap["confidence"]),
                seed=int(bootstrap["seed"]),
            )
            if not contrasts.empty:
                result.contrasts = contrasts
                contrasts.to_csv(out / "contrasts.csv", index=False)
                result.paths.append(out / "contrasts.csv")
                result.sections += ctr.describe_contrasts(contrasts, float(bootstrap["confidence"]))
        except Exception:
            log.exception("contrasts not computed")
    if _varies(table, "strength"):
        try:
            clips = steer.steerability_table(table, load)
            if not clips.empty:
                summary = steer.summarise(clips)
                clips.to_csv(out / "steerability.csv", index=False)
                summary.to_csv(out / "steerability_summary.csv", index=False)
                result.paths += [out / "steerability.csv", out / "steerability_summary.csv"]
                figure = steer.histogram(clips, out / "steerability.png", scored(table))
                if figure is not None:
                    result.paths.append(figure)
                result.sections += steer.describe_steerability(summary)
                if len(summary) == len(steer.TARGETS):  # one group: the shares are the sweep's
                    for row in summary.itertuples():
                        if row.response != "step":  # a step's "slope" is one jump: no wrong-way share to log
                            result.metrics[f"wrong_way_share_{row.target}"] = float(row.share_wrong_way)
        except Exception:
            log.exception("steerability not computed")
    return result
