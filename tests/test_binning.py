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


@pytest.mark.parametrize(("name", "per_axis"), [("9bin", 3), ("25bin", 5)])
def test_shipped_schemes_tile_the_rating_square_valence_major(name, per_axis):
    """Every category is reached on [-1, 1]^2, each cell is one category, and the order is valence-major."""
    scheme = Binning.load(CONF / f"{name}.yaml")
    assert scheme.name == name and len(scheme.categories) == per_axis**2
    grid = np.linspace(-1, 1, 201)
    v, a = (x.ravel() for x in np.meshgrid(grid, grid, indexing="ij"))
    assert set(scheme.categorize(v, a)) == set(scheme.categories)
    # walking up valence at a fixed arousal visits the valence names in order, and likewise for arousal
    along_v = list(dict.fromkeys(scheme.categorize(grid, np.zeros_like(grid))))
    along_a = list(dict.fromkeys(scheme.categorize(np.zeros_like(grid), grid)))
    assert along_v == [scheme.categories[i * per_axis + per_axis // 2] for i in range(per_axis)]
    assert along_a == list(scheme.categories[(per_axis // 2) * per_axis : (per_axis // 2 + 1) * per_axis])
    assert scheme.categories[0] == f"{scheme.valence_names[0]}_{scheme.arousal_names[0]}"
    assert scheme.categories[-1] == f"{scheme.valence_names[-1]}_{scheme.arousal_names[-1]}"


def test_25bin_spot_values():
    b25 = Binning.load(CONF / "25bin.yaml")
    v = np.array([-0.6, -0.5999, 0.2, 0.2001, 1.0])
    a = np.array([-1.0, 0.6, 0.6001, -0.2, -0.1999])
    assert b25.categorize(v, a).tolist() == [
        "very_negative_very_weak",
        "negative_strong",
        "neutral_very_strong",
        "positive_weak",
        "very_positive_moderate",
    ]


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
