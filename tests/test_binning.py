"""Binning: the reference schemes at every boundary, aliases, user schemes and their validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steering.config.fields import parse
from steering.config.schema import BinningConf
from steering.data.binning import Binning, BinningError

CONF = Path(__file__).resolve().parents[1] / "conf" / "binning"


@pytest.fixture(params=["9bin", "25bin"])
def scheme(request) -> Binning:
    return Binning.load(CONF / f"{request.param}.yaml")


def test_reference_schemes_match_reference_model():
    b9 = Binning.load(CONF / "9bin.yaml")
    assert b9.name == "9bin" and b9.min_samples == 15
    assert b9.valence_thresholds == (-0.3, 0.3) and b9.arousal_thresholds == (-0.3, 0.3)
    assert b9.categories[0] == "negative_weak" and b9.categories[-1] == "positive_strong"
    assert len(b9.categories) == 9
    b25 = Binning.load(CONF / "25bin.yaml")
    assert b25.valence_thresholds == (-0.6, -0.2, 0.2, 0.6)
    assert b25.arousal_names == ("very_weak", "weak", "moderate", "strong", "very_strong")
    assert len(b25.categories) == 25


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_boundary_falls_in_the_lower_bin(scheme, dtype):
    for axis in ("valence", "arousal"):
        thresholds = getattr(scheme, f"{axis}_thresholds")
        names = getattr(scheme, f"{axis}_names")
        for i, th in enumerate(thresholds):
            at = np.array([th], dtype=dtype)
            above = np.nextafter(at, dtype(np.inf))
            below = np.nextafter(at, dtype(-np.inf))
            other = np.zeros(1, dtype=dtype)
            for value, expected in ((below, names[i]), (at, names[i]), (above, names[i + 1])):
                args = (value, other) if axis == "valence" else (other, value)
                got = scheme.categorize(*args)[0]
                assert got in scheme.categories
                if axis == "valence":
                    assert got.startswith(expected + "_"), (axis, value, got)
                else:
                    assert got.endswith("_" + expected), (axis, value, got)


def test_9bin_spot_values():
    b9 = Binning.load(CONF / "9bin.yaml")
    v = np.array([-0.3, -0.2999, 0.3, 0.3001, -1.0, 1.0])
    a = np.array([0.31, -0.3, 0.0, 0.3, -0.31, 1.0])
    assert b9.categorize(v, a).tolist() == [
        "negative_strong",
        "neutral_weak",
        "neutral_moderate",
        "positive_moderate",
        "negative_weak",
        "positive_strong",
    ]


def test_categorize_rejects_nan_and_shape_mismatch(scheme):
    with pytest.raises(BinningError, match="NaN"):
        scheme.categorize(np.array([np.nan]), np.array([0.0]))
    with pytest.raises(ValueError, match="same shape"):
        scheme.categorize(np.zeros(2), np.zeros(3))


def test_aliases_and_canonical_names():
    b25 = Binning.load(CONF / "25bin.yaml")
    assert b25.canonical("neutral_middle") == "neutral_moderate"
    assert b25.canonical("very_negative_middle") == "very_negative_moderate"
    assert b25.canonical("very_positive_very_strong") == "very_positive_very_strong"
    with pytest.raises(BinningError, match="unknown category"):
        b25.canonical("neutral_loud")
    b9 = Binning.load(CONF / "9bin.yaml")
    assert not b9.is_category("neutral_middle")  # 9bin has no such alias
    assert b9.is_category("neutral_moderate")


def test_from_conf_round_trips():
    b = Binning.load(CONF / "25bin.yaml")
    assert Binning.from_conf(parse(BinningConf, b.to_dict())) == b
    assert b.aliases == {"middle": "moderate"}


def test_user_scheme_from_yaml(tmp_path):
    path = tmp_path / "quad.yaml"
    path.write_text(
        "valence: {thresholds: [0.0], names: [low, high]}\narousal: {thresholds: [0.0], names: [calm, excited]}\n"
    )
    b = Binning.load(path)
    assert b.name == "quad" and b.min_samples == 15
    assert b.categories == ("low_calm", "low_excited", "high_calm", "high_excited")
    assert b.categorize(np.array([0.0, 0.1]), np.array([0.5, 0.0])).tolist() == ["low_excited", "high_calm"]


@pytest.mark.parametrize(
    ("valence", "message"),
    [
        ("{thresholds: [0.0, 0.5], names: [a, b]}", "one more name than thresholds"),
        ("{thresholds: [0.5, 0.0], names: [a, b, c]}", "strictly increasing"),
        ("{thresholds: [0.0], names: [a, a]}", "distinct"),
        ("{names: [a, b]}", "valence.thresholds: Missing mandatory value"),
        ("{thresholds: [x], names: [a, b]}", r"valence.thresholds\[0\]: Value 'x' .* could not be converted to Float"),
        ("{thresholds: [0.0], names: [a, b]}\nmin_samples: 0", "min_samples: Value '0' must be >= 1"),
        ("{thresholds: [0.0], names: [a, b], colour: red}", "Key 'colour' not in 'AxisConf'"),
    ],
)
def test_invalid_user_scheme_names_file_and_problem(tmp_path, valence, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"valence: {valence}\narousal: {{thresholds: [0.0], names: [calm, excited]}}\n")
    with pytest.raises(BinningError, match=message) as info:
        Binning.load(path)
    assert str(path) in str(info.value)


def test_missing_binning_file(tmp_path):
    with pytest.raises(BinningError, match="not found"):
        Binning.load(tmp_path / "nope.yaml")
