"""Hydra overrides read once, with Hydra's parser: swept keys, planned jobs, strengths, a job's values."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException

from steering.sweep import overrides


def test_varied_keys_are_the_sweep_overrides_then_the_sweeper_params():
    task = ["strength=0,1", "method=direct", "+category=oracle,random", "~foo"]
    assert overrides.varied_keys(task, {"layer": "1,2"}) == ["strength", "category", "layer"]
    assert overrides.varied_keys(["strength=0,1", "strength=2,3"]) == ["strength"]


def test_planned_jobs_multiply_the_discrete_sweeps():
    assert overrides.planned_jobs(["strength=0,1", "method=direct", "+c=a,b"], {"layer": "1,2,3"}) == 12
    assert overrides.planned_jobs(["strength=range(0,3)"]) == 3
    assert overrides.planned_jobs(["strength=interval(0,1)"]) is None
    assert overrides.planned_jobs([]) == 1


def test_values_of_a_key_expand_sweeps_and_keep_single_values():
    task = ["strength=0,0.5,2", "method=direct", "+strength=4"]
    assert sorted(overrides.values_of("strength", task, {"strength": "1,2"}), key=float) == [
        "0",
        "0.5",
        "1",
        "2",
        "2",
        "4",
    ]
    assert overrides.values_of("layer", task) == []


def test_a_jobs_values_are_kept_as_written():
    values = overrides.override_values(
        ["+approach=x", "strength=1.0", "~foo", "~bar=1", "signals.path='/a b/c.json'", "x=[1, 2]"]
    )
    assert values == {"approach": "x", "strength": "1.0", "bar": "1", "signals.path": "'/a b/c.json'", "x": "[1, 2]"}


def test_a_malformed_recorded_override_is_skipped_with_a_warning(caplog):
    assert overrides.override_values(["strength=1", "a=[unclosed"]) == {"strength": "1"}
    assert "cannot parse" in caplog.text
    with pytest.raises(HydraException):
        overrides.varied_keys(["a=[unclosed"])
