"""Sweep-level inference end to end on tiny assets: confirmation on test, contrasts, steerability, Holm/BH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("valence", "arousal")


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def _standalone(assets, name: str, *overrides: str):
    """One plain run (no sweep) of the tiny assets; returns its MLflow run."""
    tmp = assets["tmp"]
    uri = f"sqlite:///{tmp}/{name}.db"
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        *overrides,
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        f"tracking.uri={uri}",
        f"cache.dir={tmp}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        f"hydra.run.dir={tmp}/{name}",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("steering")
    (run,) = client.search_runs([exp.experiment_id])
    return run


def test_strength_sweep_selects_on_val_and_confirms_the_best_row_once_on_test(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(
        assets, "confirm", "method=bypass", "strength=0,1,3", "data.eval_split=val", "confirm=true"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    confirmations = [c for c in children if c.data.tags.get("sweep_role") == "confirmation"]
    jobs = [c for c in children if c.data.tags.get("sweep_role") != "confirmation"]
    assert len(confirmations) == 1 and len(jobs) == 3
    confirmation = confirmations[0]
    assert confirmation.info.status == "FINISHED"
    assert confirmation.data.tags["sweep_id"] == info["sweep_id"]
    assert confirmation.data.params["data.eval_split"] == "test"
    assert {j.data.params["data.eval_split"] for j in jobs} == {"val"}
    # The comparison table holds the sweep's jobs only, and the choice is its best mean Δr.
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert sorted(table["strength"]) == [0, 1, 3] and confirmation.info.run_id not in set(table["run_id"])
    best = table.loc[((table["dr_valence"] + table["dr_arousal"]) / 2).idxmax()]
    assert confirmation.data.tags["confirmation_of"] == best["run_id"]
    assert parent.data.tags["confirmation_run_id"] == confirmation.info.run_id
    assert parent.data.tags["confirmation_choice"] == f"strength={best['strength']:g}"
    # confirmation.csv: the choice, its val figures (the table's) and its test figures (the new run's).
    confirm = pd.read_csv(sweep_dir / "confirmation.csv").set_index("target")
    assert list(confirm.index) == list(TARGETS)
    assert (confirm["choice"] == f"strength={best['strength']:g}").all()
    assert set(confirm["selected_on"]) == {"val"} and set(confirm["confirmed_on"]) == {"test"}
    for t in TARGETS:
        assert confirm.loc[t, "selected_dr"] == pytest.approx(best[f"dr_{t}"])
        for stat in ("dr", "dr_ci_low", "dr_ci_high", "dr_p"):
            name = f"dr_{t}{stat[2:]}"
            assert confirm.loc[t, f"confirmed_{stat}"] == pytest.approx(confirmation.data.metrics[name])
        assert parent.data.metrics[f"confirmed_dr_{t}"] == pytest.approx(confirmation.data.metrics[f"dr_{t}"])
    # The confirmation is exactly a standalone run of the chosen configuration on test.
    chosen = f"strength={best['strength']:g}"
    alone = _standalone(assets, "confirm_alone", "method=bypass", chosen, "data.eval_split=test")
    for t in TARGETS:
        for stat in ("r_base", "r_steered", "dr", "dr_ci_low", "dr_ci_high", "dr_p"):
            name = f"{stat}_{t}" if stat.startswith("r_") else f"dr_{t}{stat[2:]}"
            assert confirmation.data.metrics[name] == pytest.approx(alone.data.metrics[name], abs=1e-9), name
    assert confirmation.data.tags["config_hash"] == alone.data.tags["config_hash"]  # confirm.* is volatile
    # The parent carries the files; comparison.md points at the confirmation and names the family.
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md", "confirmation.csv", "steerability.csv", "steerability.png"} <= artifacts
    text = (sweep_dir / "comparison.md").read_text()
    assert "run once on `test`" in text and confirmation.info.run_id in text
    assert "Family: 6 tests" in text and "re-creates selection" not in text
    # Steerability: one slope per clip and target over the three strengths.
    steer = pd.read_csv(sweep_dir / "steerability.csv")
    n_val = int(jobs[0].data.metrics["n_eval"])
    assert len(steer) == 2 * n_val and set(steer["target"]) == set(TARGETS)
    assert (sweep_dir / "steerability.png").stat().st_size > 10_000
    # A report rebuilt from MLflow gives the same table (Holm/BH included) and confirmation.
    out = assets["tmp"] / "reports"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    rebuilt = subprocess.run(
        [sys.executable, "-m", "steering.report", f"sweep={info['sweep_id']}", f"tracking.uri={uri}", f"out={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=assets["tmp"],
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / info["sweep_id"] / "comparison.csv"), table)
    for name in ("confirmation.csv", "steerability.csv", "steerability_summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / info["sweep_id"] / name), pd.read_csv(sweep_dir / name))
    assert (out / info["sweep_id"] / "comparison.md").read_text() == text


def test_controls_sweep_gets_contrasts_equal_to_the_difference_of_delta_r(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(assets, "controls", "+experiment=controls")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    table = pd.read_csv(sweep_dir / "comparison.csv").set_index("category")
    contrasts = pd.read_csv(sweep_dir / "contrasts.csv")
    assert "contrasts.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert set(contrasts["condition"]) == {"oracle", "predicted"}
    assert set(contrasts["control"]) == {"shuffled", "random", "mean"}
    assert len(contrasts) == 2 * 3 * 2
    for row in contrasts.itertuples():
        expected = table.loc[row.condition, f"dr_{row.target}"] - table.loc[row.control, f"dr_{row.target}"]
        # recomputed from predictions.csv (text, float32 precision) against the runs' in-memory Δr
        assert row.contrast == pytest.approx(expected, abs=1e-6)
        assert row.dr_condition == pytest.approx(table.loc[row.condition, f"dr_{row.target}"], abs=1e-6)
        assert row.ci_low <= row.ci_high and row.ci_high - row.ci_low < 2
        assert 0 < row.p <= 1
        assert row.condition_run_id == table.loc[row.condition, "run_id"]
    text = (sweep_dir / "comparison.md").read_text()
    assert "## Contrasts" in text and "Family: 10 tests" in text
    # The family's adjusted p-values are on the child runs too (MLflow's run table), the family size on the parent.
    assert parent.data.metrics["multiplicity_family_size"] == 10
    for child in children:
        row = table[table["run_id"] == child.info.run_id].iloc[0]
        for t in TARGETS:
            assert child.data.metrics[f"dr_{t}_p_holm"] == pytest.approx(row[f"dr_{t}_p_holm"])
            assert child.data.metrics[f"dr_{t}_q"] == pytest.approx(row[f"dr_{t}_q"])
    assert "re-creates selection on the reported split" in text  # evaluated on test, nothing confirmed
    assert not (sweep_dir / "steerability.csv").exists()  # strength does not vary
    assert json.loads(parent.data.tags["sweep_varied"]) == ["category"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["confirm.criterion=best"], "confirm.criterion must be one of mean_dr, dr_valence, dr_arousal"),
        (["confirm.criterion=dr_valence", "confirm=true"], "confirm=true replaced confirm.criterion=dr_valence"),
    ],
)
def test_a_bad_confirm_setting_stops_the_sweep_before_any_job(assets, overrides, message, run_sweep):
    proc, sweep_dir, uri = run_sweep(assets, "badconfirm", "strength=0,1", *overrides)
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert message in output and "Traceback" not in output
    assert not sweep_dir.exists() and not (assets["tmp"] / "badconfirm.db").exists()
