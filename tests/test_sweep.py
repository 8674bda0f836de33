"""Sweeps end to end: parent/child runs, the comparison table, failed jobs, experiment presets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def test_approaches_preset_fills_the_table_one_row_per_approach(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(assets, "approaches", "+experiment=approaches")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep_experiment"] == "approaches"
    assert len(children) == 5 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["sweep_id"] for c in children} == {info["sweep_id"]}
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert list(table["approach"]) == ["25bin_dual", "9bin_dual", "9bin_valence", "9bin_arousal", "9bin_valence_conv4"]
    assert list(table["binning"]) == ["25bin", "9bin", "9bin", "9bin", "9bin"]
    assert list(table["layer"]) == ["all", "all", "all", "all", "conv4"]
    for t in ("valence", "arousal"):
        assert {f"dr_{t}", f"dr_{t}_ci_low", f"dr_{t}_ci_high", f"dr_{t}_p"} <= set(table.columns)
        assert (table[f"dr_{t}_ci_low"] <= table[f"dr_{t}"]).all() and (
            table[f"dr_{t}"] <= table[f"dr_{t}_ci_high"]
        ).all()
    assert (table["strength"] == 1.5).all() and (table["oracle"].astype(str).str.lower() == "true").all()
    # Each row's numbers are its own run's metrics (one run, both targets).
    by_id = {c.info.run_id: c for c in children}
    for row in table.itertuples():
        assert row.dr_arousal == pytest.approx(by_id[row.run_id].data.metrics["dr_arousal"])
        assert row.dr_valence == pytest.approx(by_id[row.run_id].data.metrics["dr_valence"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md"} <= artifacts
    assert "strength_response.png" not in artifacts  # strength does not vary
    assert "| 9bin_valence_conv4 |" in (sweep_dir / "comparison.md").read_text()


def test_failed_jobs_show_as_failed_and_the_rest_make_the_table(assets, run_sweep, parent_and_children):
    # arousal -> conv4 does not exist: those two jobs fail before any work.
    proc, sweep_dir, uri = run_sweep(assets, "partial", "pathway=valence,arousal", "layer=conv4", "strength=0,2")
    assert proc.returncode != 0  # Hydra reports the failure...
    client, info, parent, children = parent_and_children(uri, sweep_dir)
    assert parent.info.status == "FINISHED"  # ...but the sweep is closed and tabulated
    assert info["varied"] == ["pathway", "strength"]
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    table = pd.read_csv(sweep_dir / "comparison.csv").sort_values("job")
    assert list(table["pathway"]) == ["valence", "valence", "arousal", "arousal"]
    assert list(table["strength"]) == [0, 2, 0, 2]
    assert list(table["status"]) == ["FINISHED", "FINISHED", "FAILED", "FAILED"]
    assert table["error"].iloc[2].startswith("SteeringConfigError")
    assert table["dr_valence"].iloc[:2].notna().all() and table["dr_valence"].iloc[2:].isna().all()
    assert (sweep_dir / "strength_response.png").stat().st_size > 10_000
    assert "strength_response.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_parent_fails_when_every_job_fails(assets, run_sweep, parent_and_children):
    proc, sweep_dir, uri = run_sweep(assets, "allfail", "pathway=arousal", "layer=conv4", "strength=0,1")
    assert proc.returncode != 0
    _, _, parent, children = parent_and_children(uri, sweep_dir)
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]


@pytest.mark.parametrize(
    ("preset", "jobs", "swept"),
    [
        ("approaches", 5, "+approach"),
        ("strengths", 10, "strength"),
        ("methods", 24, "method"),
        ("controls", 5, "category"),
    ],
)
def test_experiment_presets_compose_and_define_their_sweep(preset, jobs, swept):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"+experiment={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert swept in params
    n = 1
    for value in params.values():
        n *= len(str(value).split(","))
    assert n == jobs
    if preset == "strengths":  # a strength response: the unsteered point first, then rising strengths
        strengths = [float(x) for x in str(params.strength).split(",")]
        assert strengths[0] == 0 and strengths == sorted(set(strengths))
        assert (cfg.binning.name, cfg.pathway.name, cfg.layer.name) == ("9bin", "valence", "conv4")
        assert cfg.method.name == "modulation"  # the seed's meaning of strength (gains x s); lrm cancels s
    if preset == "controls":  # the oracle condition against controls that are all known category modes
        categories = str(params.category).split(",")
        assert categories[0] == "oracle" and len(set(categories)) == len(categories) == jobs
        assert set(categories) <= {p.stem for p in (ROOT / "conf" / "category").glob("*.yaml")}


@pytest.mark.parametrize(
    ("approach", "expected"),
    [
        ("25bin_dual", ("25bin", "dual", "all")),
        ("9bin_dual", ("9bin", "dual", "all")),
        ("9bin_valence", ("9bin", "valence", "all")),
        ("9bin_arousal", ("9bin", "arousal", "all")),
        ("9bin_valence_conv4", ("9bin", "valence", "conv4")),
    ],
)
def test_approach_configs_pick_binning_pathway_layer(approach, expected):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["+experiment=approaches", f"+approach={approach}"])
    assert (cfg.binning.name, cfg.pathway.name, cfg.layer.name) == expected
    assert cfg.strength == 1.5 and cfg.method.name == "modulation"  # the seed's strength: gains x s


def test_experiment_group_is_a_tracked_symlink_to_the_top_level_folder():
    """A fresh clone gets conf/experiment -> ../experiments (git stores the link itself)."""
    link = ROOT / "conf" / "experiment"
    assert link.is_symlink() and os.readlink(link) == "../experiments"
    listed = subprocess.run(
        ["git", "ls-files", "-s", "conf/experiment"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    if listed:  # absent only in an export without git metadata
        assert listed.startswith("120000 ")
