"""Tables rebuilt from MLflow: table building, sweep lookup, comparison of two sweeps, the report CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from steering.sweep import table as tbl
from steering.tracking.runs import configure

ROOT = Path(__file__).resolve().parents[1]


def log_sweep(uri: str, sweep_id: str, results: dict[float, tuple[float, float] | None], preset: str = "strengths"):
    """A parent run and one child per strength (None = a FAILED job), as the sweep callback leaves them."""
    experiment_id = configure(uri, "steering")
    client = MlflowClient(uri)
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep-{sweep_id}",
        tags={"sweep_id": sweep_id, "sweep_role": "parent", "sweep_varied": '["strength"]', "sweep_experiment": preset},
    )
    for num, (strength, dr) in enumerate(results.items()):
        tags = {
            "mlflow.parentRunId": parent.info.run_id,
            "sweep_id": sweep_id,
            "sweep_job_num": str(num),
            "sweep_overrides": json.dumps([f"strength={strength}", "method=bypass"]),
            "oracle": "true",
        }
        run = client.create_run(experiment_id, run_name=f"s{strength}", tags=tags)
        client.log_param(run.info.run_id, "strength", strength)
        if dr is None:
            client.set_terminated(run.info.run_id, "FAILED")
            continue
        for t, value in zip(("valence", "arousal"), dr):
            client.log_metric(run.info.run_id, f"dr_{t}", value)
            client.log_metric(run.info.run_id, f"dr_{t}_ci_low", value - 0.1)
            client.log_metric(run.info.run_id, f"dr_{t}_ci_high", value + 0.1)
            client.log_metric(run.info.run_id, f"dr_{t}_p", 0.5)
        client.log_metric(run.info.run_id, "coverage", 1.0)
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_sweep(uri, "sweepA", {0.0: (0.0, 0.0), 1.0: (0.01, 0.02), 2.0: (0.03, -0.01), 5.0: None})
    log_sweep(uri, "sweepB", {0.0: (0.0, 0.0), 1.0: (0.05, 0.01), 2.0: (0.02, 0.02)}, preset="other")
    return uri, tmp_path


def test_table_has_one_row_per_job_in_job_order_with_failed_rows(store):
    uri, _ = store
    runs = tbl.find_sweep(MlflowClient(uri), "sweepA")
    table = tbl.comparison_table(runs.children, runs.varied)
    assert list(table["strength"]) == [0.0, 1.0, 2.0, 5.0]
    assert list(table["status"]) == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    # one strength per row for both targets: never mixed across runs
    assert list(table["dr_valence"].iloc[:3]) == pytest.approx([0.0, 0.01, 0.03])
    assert list(table["dr_arousal"].iloc[:3]) == pytest.approx([0.0, 0.02, -0.01])
    assert table["dr_valence"].iloc[3] != table["dr_valence"].iloc[3]  # NaN for the failed job
    assert "method" not in table  # the same in every row, so not a column


def test_latest_sweep_by_preset_and_missing_sweep(store):
    client = MlflowClient(store[0])
    assert tbl.latest_sweep_id(client, preset="strengths") == "sweepA"
    assert tbl.latest_sweep_id(client) == "sweepB"
    with pytest.raises(LookupError, match="nope"):
        tbl.find_sweep(client, "nope")


def test_compare_two_sweeps_gives_differences_for_matching_configurations(store):
    client = MlflowClient(store[0])
    tables = [tbl.comparison_table(tbl.find_sweep(client, s).children, ["strength"]) for s in ("sweepA", "sweepB")]
    diff = tbl.compare_sweeps(*tables)
    assert list(diff["strength"]) == [0.0, 1.0, 2.0]  # strength 5 only in A
    assert list(diff["diff_dr_valence"]) == pytest.approx([0.0, 0.04, -0.01])
    assert list(diff["diff_dr_arousal"]) == pytest.approx([0.0, -0.01, 0.03])


def _report(tmp: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "steering.report", f"tracking.uri={uri}", f"out={tmp}/reports", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp)


def test_report_cli_rebuilds_table_and_figure_and_compares(store):
    uri, tmp = store
    proc = _report(tmp, uri, "preset=strengths", "log_to_parent=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "# Sweep sweepA" in proc.stdout and "FAILED" in proc.stdout
    assert max(len(line) for line in table_lines(proc.stdout, "job")) <= 100
    out = tmp / "reports" / "sweepA"
    assert len(pd.read_csv(out / "comparison.csv")) == 4
    assert (out / "strength_response.png").stat().st_size > 10_000
    parent = tbl.find_sweep(MlflowClient(uri), "sweepA").parent
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id, "report")}
    assert "report/comparison.csv" in logged
    proc = _report(tmp, uri, "compare=[sweepA,sweepB]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    diff = pd.read_csv(tmp / "reports" / "compare_sweepA_vs_sweepB" / "comparison_diff.csv")
    assert len(diff) == 3 and diff["diff_dr_valence"].tolist() == pytest.approx([0.0, 0.04, -0.01])
    assert diff["run_id_a"].notna().all() and diff["run_id_b"].notna().all()
    assert max(len(line) for line in table_lines(proc.stdout, "strength")) <= 100


def table_lines(stdout: str, first_column: str) -> list[str]:
    """The terminal table in ``stdout``: from its header row to the next blank line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    assert end - start >= 3  # header, rule and at least one row
    return lines[start:end]


def log_grid(
    uri: str, sweep_id: str, methods: list[str], strengths: list[float], preset: str, extra: dict | None = None
) -> dict:
    """A sweep over method x strength where dr encodes both (dr_valence = strength/100 + method index/1000).

    ``extra``: further metrics every run logs, as name -> factor (logged value: factor * dr).
    """
    experiment_id = configure(uri, "steering")
    client = MlflowClient(uri)
    varied = [k for k, v in (("method", methods), ("strength", strengths)) if len(v) > 1]
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep-{sweep_id}",
        tags={
            "sweep_id": sweep_id,
            "sweep_role": "parent",
            "sweep_varied": json.dumps(varied),
            "sweep_experiment": preset,
        },
    )
    ids = {}
    for num, (method, strength) in enumerate((m, s) for m in methods for s in strengths):
        tags = {
            "mlflow.parentRunId": parent.info.run_id,
            "sweep_id": sweep_id,
            "sweep_job_num": str(num),
            "sweep_overrides": json.dumps([f"method={method}", f"strength={strength}"]),
            "oracle": "true",
        }
        run = client.create_run(experiment_id, run_name=f"{method}-s{strength}", tags=tags)
        client.log_param(run.info.run_id, "strength", strength)
        client.log_param(run.info.run_id, "method.name", method)
        dr = strength / 100 + ["lrm", "bypass", "modulation"].index(method) / 1000
        for t in ("valence", "arousal"):
            for name, value in ((f"dr_{t}", dr), (f"dr_{t}_ci_low", dr - 0.01), (f"dr_{t}_ci_high", dr + 0.01)):
                client.log_metric(run.info.run_id, name, value)
            client.log_metric(run.info.run_id, f"dr_{t}_p", 0.0123456)
        for name, factor in (extra or {}).items():
            client.log_metric(run.info.run_id, name, factor * dr)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids[(method, strength)] = run.info.run_id
    client.set_terminated(parent.info.run_id, "FINISHED")
    return ids


def test_compare_matches_on_every_choice_that_varies_in_either_sweep(tmp_path):
    # the case: a strengths sweep (method fixed to lrm) against a methods sweep (method x strength)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = log_grid(uri, "strengthsX", ["lrm"], [0.0, 1.0, 2.0, 5.0], "strengths")
    b = log_grid(uri, "methodsX", ["lrm", "bypass", "modulation"], [0.0, 1.0, 2.0], "methods")
    client = MlflowClient(uri)
    comparison = tbl.compare_runs(tbl.find_sweep(client, "strengthsX"), tbl.find_sweep(client, "methodsX"))
    diff = comparison.table
    assert set(comparison.keys) == {"method", "strength"}
    # only lrm rows exist in both, one per shared strength; no bypass/modulation row is paired with lrm
    assert sorted(zip(diff["method"], diff["strength"])) == [("lrm", 0.0), ("lrm", 1.0), ("lrm", 2.0)]
    assert diff["diff_dr_valence"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    for row in diff.itertuples():
        assert row.run_id_a == a[("lrm", row.strength)] and row.run_id_b == b[("lrm", row.strength)]
    # and the other way round: methods minus strengths gives the same three rows
    back = tbl.compare_runs(tbl.find_sweep(client, "methodsX"), tbl.find_sweep(client, "strengthsX")).table
    assert len(back) == 3 and set(back["method"]) == {"lrm"}


def test_compare_reports_choices_fixed_in_each_sweep_but_different(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_grid(uri, "lrmS", ["lrm"], [1.0, 2.0], "strengths")
    log_grid(uri, "bypassS", ["bypass"], [1.0, 2.0], "strengths")
    client = MlflowClient(uri)
    comparison = tbl.compare_runs(tbl.find_sweep(client, "lrmS"), tbl.find_sweep(client, "bypassS"))
    assert comparison.keys == ["strength"]  # method is what the comparison is about, not a key
    assert comparison.differences == {"method": ("lrm", "bypass")}
    assert comparison.table["diff_dr_valence"].tolist() == pytest.approx([0.001, 0.001])
    assert "method lrm → bypass" in comparison.header("lrmS", "bypassS")


def test_unknown_sweep_or_preset_lists_what_exists_with_exit_2(store):
    uri, tmp = store
    for arg, first in (("sweep=nope", "no sweep 'nope'"), ("preset=nope", "no sweep of preset 'nope'")):
        proc = _report(tmp, uri, arg)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "LookupError" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert first in lines[0]
        listed = [line.split()[0] for line in lines[1:]]
        assert listed == ["sweepB", "sweepA"]  # newest first, with their presets
        assert "preset=other" in lines[1] and "preset=strengths" in lines[2]
    proc = _report(tmp, uri, "mlflow_experiment=nope")
    assert proc.returncode == 2 and "no MLflow experiment named 'nope'" in proc.stderr
    assert "steering" in proc.stderr.splitlines()[1:][-1] or "steering" in proc.stderr


@pytest.mark.parametrize("declared", [True, False])
def test_a_new_metric_the_runs_log_is_never_a_grouping_column(tmp_path, monkeypatch, declared):
    """Runs log ccc_steered_<t>, different in every run. Declared as a table column it is a metric
    column; undeclared it stays out of the table. Either way rows are grouped by the choices alone."""
    from steering.sweep import columns, figures, parent, steerability

    if declared:
        monkeypatch.setattr(columns, "PER_TARGET_METRICS", (*columns.PER_TARGET_METRICS, "ccc_steered_{t}"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    extra = {"ccc_steered_valence": 7.0, "ccc_steered_arousal": -3.0}
    log_grid(uri, "cccS", ["lrm", "bypass"], [0.0, 1.0, 2.0], "methods", extra=extra)
    log_grid(uri, "cccT", ["lrm", "bypass"], [0.0, 1.0, 2.0], "methods", extra={"ccc_steered_valence": 5.0})
    client = MlflowClient(uri)
    runs = tbl.find_sweep(client, "cccS")
    table = tbl.comparison_table(runs.children, runs.varied)
    assert ("ccc_steered_valence" in table) is declared
    if declared:
        dr = table["dr_valence"].to_numpy()
        assert table["ccc_steered_valence"].to_numpy() == pytest.approx(7.0 * dr)
    assert tbl.choice_columns(table) == ["method", "strength"]
    assert steerability.group_keys(table) == ["method"]
    assert figures.row_labels(table)[0] == "method=lrm, strength=0.0"
    assert "ccc" not in parent.varied_values(table)
    comparison = tbl.compare_runs(runs, tbl.find_sweep(client, "cccT"))
    assert set(comparison.keys) == {"method", "strength"} and len(comparison.table) == 6
