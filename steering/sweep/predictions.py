"""Child runs' ``predictions.csv`` artifacts, read back for sweep-level statistics (contrasts, steerability).

A run's predictions hold, per clip, the ratings, the baseline and the steered predictions. Multi-draw
controls (``category=random`` / ``shuffled`` with ``category.draws``) add ``steered_{t}_draw{k}``;
their Δr is the mean over draws, so :func:`steered_draws` returns every draw (one row when there are none).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from steering.vocab import TARGETS  # noqa: E402

ARTIFACT = "predictions.csv"


def load_predictions(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """The run's ``predictions.csv`` artifact as a frame.

    An artifact in a local artifact store is read where it lies (the same file a download would copy,
    without MLflow's per-run download machinery: most of a sweep's end for many jobs); others are downloaded.
    """
    local = _local_artifact(client, run_id)
    if local is not None:
        return pd.read_csv(local)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, ARTIFACT, tmp)
        return pd.read_csv(Path(path))


def _local_artifact(client: MlflowClient, run_id: str) -> Path | None:
    """The path of the run's ``predictions.csv`` when its artifact store is a local folder, else None."""
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    uri = client.get_run(run_id).info.artifact_uri
    if not uri or not is_local_uri(uri, is_tracking_or_registry_uri=False):
        return None
    path = Path(local_file_uri_to_path(uri)) / ARTIFACT
    return path if path.is_file() else None


def draw_columns(predictions: pd.DataFrame, target: str) -> list[str]:
    """``steered_{target}_draw{k}`` columns in draw order (empty for single-draw runs)."""
    pattern = re.compile(rf"^steered_{target}_draw(\d+)$")
    found = [(int(m.group(1)), c) for c in predictions.columns if (m := pattern.match(c))]
    return [c for _, c in sorted(found)]


def steered_draws(predictions: pd.DataFrame, target: str) -> np.ndarray:
    """(draws, clips) steered predictions: every draw column, or the single ``steered_{target}`` column."""
    columns = draw_columns(predictions, target) or [f"steered_{target}"]
    return predictions[columns].to_numpy(dtype=np.float64).T


def check_same_clips(frames: Sequence[pd.DataFrame], names: Sequence[str]) -> None:
    """Raise ValueError unless every frame scored the same clips in the same order with the same ratings."""
    if not frames:
        return
    first = frames[0]
    for frame, name in zip(frames[1:], names[1:]):
        if len(frame) != len(first) or not (frame["audio_name"].to_numpy() == first["audio_name"].to_numpy()).all():
            raise ValueError(f"runs {names[0]} and {name} did not score the same clips in the same order")
        for t in TARGETS:
            if not np.allclose(frame[t].to_numpy(), first[t].to_numpy()):
                raise ValueError(f"runs {names[0]} and {name} have different {t} ratings for the same clips")
