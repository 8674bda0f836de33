"""Sweep-level inference without MLflow: Holm/BH, contrasts, steerability, confirmation settings and choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from steering.stats import multiplicity as mult
from steering.stats.metrics import pearson
from steering.sweep import confirmation as conf
from steering.sweep import contrasts as ctr
from steering.sweep import steerability as steer

CONF = str(Path(__file__).resolve().parents[1] / "conf")

# -- multiplicity ----------------------------------------------------------------------------------


def test_holm_matches_hand_computed_step_down():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert mult.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert mult.holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1
    assert mult.holm(np.array([])).size == 0


def test_benjamini_hochberg_matches_hand_computed_step_up():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005, 0.01, 0.03, 0.04 -> p m / rank = 0.02, 0.02, 0.04, 0.04 -> running min from the top: same
    assert mult.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    p = np.array([0.02, 0.03, 0.04, 0.2])
    # 0.08, 0.06, 0.0533, 0.2 -> min from the top: 0.0533, 0.0533, 0.0533, 0.2
    assert mult.benjamini_hochberg(p) == pytest.approx([0.04 * 4 / 3] * 3 + [0.2])


def _table(p_valence, p_arousal, status=None):
    n = len(p_valence)
    return pd.DataFrame(
        {
            "job": range(n),
            "run_name": [f"run{i}" for i in range(n)],
            "dr_valence": np.linspace(0.01, 0.05, n),
            "dr_valence_p": p_valence,
            "dr_arousal": np.linspace(-0.01, 0.02, n),
            "dr_arousal_p": p_arousal,
            "status": status or ["FINISHED"] * n,
        }
    )


def test_adjusted_columns_span_rows_and_targets_and_skip_unfinished_rows():
    table = _table([0.01, 0.04, 0.5], [0.005, 0.03, np.nan], status=["FINISHED", "FINISHED", "FAILED"])
    out = mult.add_adjusted_columns(table)
    # Family: the two finished rows x two targets = p 0.01, 0.04, 0.005, 0.03.
    assert list(out["dr_valence_p_holm"].iloc[:2]) == pytest.approx([0.03, 0.06])
    assert list(out["dr_arousal_p_holm"].iloc[:2]) == pytest.approx([0.02, 0.06])
    assert list(out["dr_valence_q"].iloc[:2]) == pytest.approx([0.02, 0.04])
    assert list(out["dr_arousal_q"].iloc[:2]) == pytest.approx([0.02, 0.04])
    assert out.iloc[2][["dr_valence_p_holm", "dr_valence_q", "dr_arousal_q"]].isna().all()
    cols = list(out.columns)
    at = cols.index("dr_valence_p")
    assert cols[at + 1 : at + 3] == ["dr_valence_p_holm", "dr_valence_q"]
    lines = "\n".join(mult.describe_family(out))
    assert "Family: 4 tests" in lines and "2 finished rows" in lines
    holm_line = next(line for line in lines.splitlines() if "Holm (FWER)" in line and "survive" in line)
    assert "job 0 (run0) valence" in holm_line and "job 0 (run0) arousal" in holm_line and "job 1" not in holm_line
    bh_line = next(line for line in lines.splitlines() if "Benjamini" in line and "survive" in line)
    assert bh_line.count("job ") == 4


def test_no_survivors_say_none():
    out = mult.add_adjusted_columns(_table([0.4, 0.9], [0.2, 0.7]))
    assert "survive Holm (FWER) at 0.05: none" in "\n".join(mult.describe_family(out))


# -- contrasts -------------------------------------------------------------------------------------


def _predictions(rng, n, y=None, base=None, effect=0.0, draws=0):
    y = rng.normal(size=n) if y is None else y
    base = 0.6 * y + rng.normal(scale=0.8, size=n) if base is None else base
    frame = pd.DataFrame(
        {
            "audio_name": [f"c{i}" for i in range(n)],
            "valence": y,
            "arousal": -y,
            "base_valence": base,
            "base_arousal": -base,
            "steered": True,
        }
    )
    steered = [base + effect * (y - base) + rng.normal(scale=0.1, size=n) for _ in range(max(draws, 1))]
    frame["steered_valence"], frame["steered_arousal"] = steered[0], -steered[0]
    if draws:
        for k, s in enumerate(steered):
            frame[f"steered_valence_draw{k}"] = s
            frame[f"steered_arousal_draw{k}"] = -s
    return frame


def _controls_table(labels):
    return pd.DataFrame(
        {
            "job": range(len(labels)),
            "category": labels,
            "strength": 2.0,
            "dr_valence": 0.0,
            "status": "FINISHED",
            "run_id": [f"id_{label}" for label in labels],
        }
    )


def test_contrast_is_the_difference_of_the_runs_delta_r_with_a_joint_bootstrap():
    rng = np.random.default_rng(3)
    n = 150
    oracle = _predictions(rng, n, effect=0.5)
    y, base = oracle["valence"].to_numpy(), oracle["base_valence"].to_numpy()
    runs = {
        "id_oracle": oracle,
        "id_random": _predictions(rng, n, y, base, effect=0.0, draws=4),
        "id_mean": _predictions(rng, n, y, base, effect=0.1),
        "id_shuffled": oracle.copy(),  # identical predictions: the contrast must be exactly 0
    }
    table = _controls_table(["oracle", "random", "mean", "shuffled"])
    out = ctr.contrasts_table(table, runs.__getitem__, resamples=400, seed=1)
    assert set(out["control"]) == {"random", "mean", "shuffled"} and set(out["condition"]) == {"oracle"}
    assert len(out) == 6  # 1 condition x 3 controls x 2 targets
    r_base = pearson(base, y)
    draws = [runs["id_random"][f"steered_valence_draw{k}"] for k in range(4)]
    dr_random = np.mean([pearson(d, y) for d in draws]) - r_base
    dr_oracle = pearson(oracle["steered_valence"], y) - r_base
    row = out[(out["target"] == "valence") & (out["control"] == "random")].iloc[0]
    assert row["dr_condition"] == pytest.approx(dr_oracle) and row["dr_control"] == pytest.approx(dr_random)
    assert row["contrast"] == pytest.approx(dr_oracle - dr_random)
    assert row["control_draws"] == 4 and row["n_clips"] == n
    assert row["ci_low"] < row["contrast"] < row["ci_high"]
    assert row["ci_low"] > 0 and row["p"] < 0.01  # a real effect against a null control
    same = out[(out["target"] == "valence") & (out["control"] == "shuffled")].iloc[0]
    assert (same["contrast"], same["ci_low"], same["ci_high"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
    # The bootstrap width is that of a paired design: far below the sum of the runs' own widths.
    assert row["ci_high"] - row["ci_low"] < 0.5
    # The contrasts are their own family for Holm/BH.
    assert list(out["p_holm"]) == pytest.approx(list(mult.holm(out["p"].to_numpy())))
    assert list(out["q"]) == pytest.approx(list(mult.benjamini_hochberg(out["p"].to_numpy())))
    assert (out["p_holm"] >= out["p"]).all()


def test_contrasts_refuse_runs_that_scored_different_clips():
    rng = np.random.default_rng(0)
    a = _predictions(rng, 30, effect=0.3)
    b = a.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="same clips"):
        ctr.contrasts_table(_controls_table(["oracle", "mean"]), {"id_oracle": a, "id_mean": b}.__getitem__)


def test_contrasts_pair_rows_only_within_the_other_choices():
    rng = np.random.default_rng(1)
    table = pd.concat([_controls_table(["oracle", "mean"]), _controls_table(["oracle", "mean"])], ignore_index=True)
    table["method"] = ["bypass", "bypass", "lrm", "lrm"]
    table["run_id"] = ["a", "b", "c", "d"]
    runs = {k: _predictions(rng, 40, effect=0.2) for k in "abcd"}
    runs["b"] = runs["b"].assign(valence=runs["a"]["valence"], arousal=runs["a"]["arousal"])
    runs["d"] = runs["d"].assign(valence=runs["c"]["valence"], arousal=runs["c"]["arousal"])
    out = ctr.contrasts_table(table, runs.__getitem__, resamples=50)
    assert len(out) == 4 and list(out.columns[:2]) == ["strength", "method"]
    pairs = set(zip(out["method"], out["condition_run_id"], out["control_run_id"]))
    assert pairs == {("bypass", "a", "b"), ("lrm", "c", "d")}


def test_bootstrap_p_is_two_sided_and_never_zero():
    assert ctr.bootstrap_p(np.full(99, 0.3)) == pytest.approx(2 / 100)
    assert ctr.bootstrap_p(np.concatenate([np.full(50, -1.0), np.full(50, 1.0)])) == 1.0
    assert ctr.bootstrap_p(np.array([np.nan])) != ctr.bootstrap_p(np.array([np.nan]))  # nan


# -- steerability ----------------------------------------------------------------------------------


def test_slopes_are_least_squares_per_clip():
    s = np.array([0.0, 1.0, 2.0, 5.0])
    preds = np.stack([2 * s, -0.5 * s + 3, np.full(4, 7.0)], axis=1)
    preds[0, 0] += 0.1  # off the line: the fit is least squares, not two points
    slopes = steer.slopes(s, preds)
    assert slopes[1] == pytest.approx(-0.5) and slopes[2] == pytest.approx(0.0)
    assert slopes[0] == pytest.approx(np.polyfit(s, preds[:, 0], 1)[0])


def test_wrong_way_share_counts_clips_moved_away_from_their_rating():
    strengths = [0.0, 1.0, 3.0]
    y = np.array([1.0, 1.0, -1.0, -1.0, 0.5, 0.2])
    base = np.zeros(6)
    # per-clip slopes: towards, away, towards, away, flat (not moved), unsteered
    k = np.array([0.2, -0.1, -0.3, 0.05, 0.0, 0.4])
    steered_mask = np.array([True, True, True, True, True, False])
    frames = {}
    for s in strengths:
        frames[f"s{s}"] = pd.DataFrame(
            {
                "audio_name": [f"c{i}" for i in range(6)],
                "valence": y,
                "arousal": y,
                "base_valence": base,
                "base_arousal": base,
                "steered_valence": base + s * k,
                "steered_arousal": base - s * k,
                "steered": steered_mask,
            }
        )
    table = pd.DataFrame(
        {"job": range(3), "strength": strengths, "status": "FINISHED", "run_id": list(frames), "dr_valence": 0.0}
    )
    clips = steer.steerability_table(table, frames.__getitem__)
    val = clips[clips["target"] == "valence"].reset_index(drop=True)
    assert list(val["slope"]) == pytest.approx(list(k))
    assert list(val["wrong_way"]) == [False, True, False, True, False, False]
    assert list(val["flat"]) == [False, False, False, False, True, False]
    summary = steer.summarise(clips).set_index("target")
    assert summary.loc["valence", "n_steered"] == 5
    assert summary.loc["valence", "share_wrong_way"] == pytest.approx(2 / 5)
    assert summary.loc["valence", "share_right_way"] == pytest.approx(2 / 5)
    assert summary.loc["arousal", "share_wrong_way"] == pytest.approx(2 / 5)  # mirrored: clips 0 and 2 wrong
    assert list(clips[clips["target"] == "arousal"]["wrong_way"]) == [True, False, True, False, False, False]


# -- confirmation settings and choice --------------------------------------------------------------


def test_confirm_settings_accept_the_bool_shorthand_and_the_mapping():
    assert conf.confirm_settings(OmegaConf.create({"confirm": True})) == conf.ConfirmSettings(True)
    assert conf.confirm_settings(OmegaConf.create({"confirm": False})).enabled is False
    mapping = OmegaConf.create({"confirm": {"enabled": True, "criterion": "dr_arousal", "split": "test"}})
    assert conf.confirm_settings(mapping) == conf.ConfirmSettings(True, "dr_arousal", "test")
    with pytest.raises(conf.ConfirmConfigError, match="confirm.criterion"):
        conf.confirm_settings(OmegaConf.create({"confirm": {"enabled": True, "criterion": "best"}}))
    with pytest.raises(conf.ConfirmConfigError, match="confirm.split"):
        conf.confirm_settings(OmegaConf.create({"confirm": {"split": "holdout"}}))
    lost = OmegaConf.create({"confirm": True, "hydra": {"overrides": {"task": ["confirm.criterion=dr_valence"]}}})
    with pytest.raises(conf.ConfirmConfigError, match="confirm.enabled=true"):
        conf.confirm_settings(lost)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], conf.ConfirmSettings(False)),
        (["confirm=true"], conf.ConfirmSettings(True)),
        (["confirm.enabled=true", "confirm.criterion=dr_valence"], conf.ConfirmSettings(True, "dr_valence")),
        (["+experiment=strengths"], conf.ConfirmSettings(True)),
        (["+experiment=methods", "confirm.criterion=dr_arousal"], conf.ConfirmSettings(True, "dr_arousal")),
        (["+experiment=strengths", "confirm=false"], conf.ConfirmSettings(False)),
    ],
)
def test_confirm_spellings_compose(overrides, expected):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    assert conf.confirm_settings(cfg) == expected


@pytest.mark.parametrize(("preset", "split"), [("strengths", "val"), ("methods", "val"), ("controls", "test")])
def test_presets_that_select_evaluate_on_val(preset, split):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"+experiment={preset}"])
    assert cfg.data.eval_split == split


def test_choice_maximises_the_criterion_among_finished_rows():
    table = pd.DataFrame(
        {
            "dr_valence": [0.05, 0.02, 0.30, 0.04, np.nan],
            "dr_arousal": [0.01, 0.06, 0.30, -0.03, 0.5],
            "status": ["FINISHED", "FINISHED", "FAILED", "FINISHED", "FINISHED"],
            "run_id": list("abcde"),
        }
    )
    assert conf.choose(table, "mean_dr")["run_id"] == "b"  # 0.04 beats 0.03; c failed, e has no valence
    assert conf.choose(table, "dr_valence")["run_id"] == "a"
    assert conf.choose(table, "dr_arousal")["run_id"] == "e"
    assert conf.choose(table.assign(status="FAILED"), "mean_dr") is None


def test_steerability_groups_by_the_other_varied_choices():
    strengths = [0.0, 2.0]
    y, base = np.array([1.0, -1.0]), np.zeros(2)
    rows, frames = [], {}
    for method, gain in (("bypass", 1.0), ("direct", -1.0)):
        for alpha in (0.5, 1.0):
            for s in strengths:
                run_id = f"{method}-{alpha}-{s}"
                k = gain * alpha * np.array([0.1, -0.1])  # bypass moves both clips towards, direct away
                frames[run_id] = pd.DataFrame(
                    {
                        "audio_name": ["a", "b"],
                        "valence": y,
                        "arousal": y,
                        "base_valence": base,
                        "base_arousal": base,
                        "steered_valence": base + s * k,
                        "steered_arousal": base + s * k,
                        "steered": True,
                    }
                )
                rows.append({"method": method, "alpha": alpha, "strength": s, "status": "FINISHED", "run_id": run_id})
    table = pd.DataFrame(rows).assign(dr_valence=0.0)
    summary = steer.summarise(steer.steerability_table(table, frames.__getitem__))
    assert list(summary.columns[:3]) == ["method", "alpha", "target"] and len(summary) == 8
    wrong = summary[summary["target"] == "valence"].set_index(["method", "alpha"])["share_wrong_way"]
    assert wrong.to_dict() == {("bypass", 0.5): 0.0, ("bypass", 1.0): 0.0, ("direct", 0.5): 1.0, ("direct", 1.0): 1.0}
    text = "\n".join(steer.describe_steerability(summary))
    assert "method=direct, alpha=0.5: valence: 100.0% wrong way" in text


def test_contrasts_compare_every_declared_condition_with_every_declared_control():
    """Conditions and controls are read from the modes' declared roles, so a new mode is never left out."""
    from steering.engine import CATEGORY_MODES

    rng = np.random.default_rng(2)
    modes = sorted(CATEGORY_MODES)
    table = _controls_table(modes).assign(**{"category.target": "neutral"})
    first = _predictions(rng, 30, effect=0.2)
    y, base = first["valence"].to_numpy(), first["base_valence"].to_numpy()
    runs = {f"id_{m}": _predictions(rng, 30, y, base, effect=0.1) for m in modes}
    out = ctr.contrasts_table(table, runs.__getitem__, resamples=20)

    def label(mode):
        return f"{mode}:neutral" if "target" in CATEGORY_MODES[mode].needs else mode

    roles = {role: {label(m) for m in modes if CATEGORY_MODES[m].role == role} for role in ("condition", "control")}
    assert roles["condition"] and roles["control"]
    pairs = set(zip(out["condition"], out["control"]))
    assert pairs == {(a, b) for a in roles["condition"] for b in roles["control"]}
