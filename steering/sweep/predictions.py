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
    """The run's ``predictions.csv`` artifact as a frame."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, ARTIFACT, tmp)
        return pd.read_csv(Path(path))


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
