"""The feature file as a run's dataset input, also when parallel jobs register it at the same moment."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from steering.tracking import dataset_input


def _log_input_failing(monkeypatch, errors: list[str]) -> list[str]:
    """mlflow.log_input raising the given errors in turn, then succeeding; returns the calls made."""
    calls: list[str] = []

    def log_input(dataset, context, tags):
        calls.append(dataset.name)
        if len(calls) <= len(errors):
            raise MlflowException(errors[len(calls) - 1])

    monkeypatch.setattr(dataset_input.mlflow, "log_input", log_input)
    monkeypatch.setattr(dataset_input.time, "sleep", lambda _s: None)
    return calls


def test_a_sibling_registering_the_same_dataset_first_is_retried(tmp_path, monkeypatch):
    race = "BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name"
    calls = _log_input_failing(monkeypatch, [race])
    dataset_input.log_feature_input(tmp_path / "feats.h5", "ab" * 32, split="test")
    assert calls == ["feats.h5", "feats.h5"]


def test_other_tracking_errors_are_not_retried(tmp_path, monkeypatch):
    calls = _log_input_failing(monkeypatch, ["RESOURCE_DOES_NOT_EXIST: run gone"])
    with pytest.raises(MlflowException, match="run gone"):
        dataset_input.log_feature_input(tmp_path / "feats.h5", "ab" * 32)
    assert calls == ["feats.h5"]


def test_a_race_that_persists_still_fails_in_the_end(tmp_path, monkeypatch):
    race = "UNIQUE constraint failed: datasets.digest"
    calls = _log_input_failing(monkeypatch, [race] * dataset_input.ATTEMPTS)
    with pytest.raises(MlflowException, match="UNIQUE"):
        dataset_input.log_feature_input(tmp_path / "feats.h5", "ab" * 32)
    assert len(calls) == dataset_input.ATTEMPTS
