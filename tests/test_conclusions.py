"""Conclusions nobody can misread: ties in selection, flat and step responses, reports that say
which split and n, confirmed figures first, contrasts in the forest plot, links to the right view."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from steering.evaluation import RunResult
from steering.sweep import confirmation as conf
from steering.sweep import figures, formats, parent, steerability, ties
from steering.sweep import table as tbl
from steering.sweep.report import SweepReport, terminal_text
from steering.tracking import links
from steering.tracking.runs import configure

STRENGTHS = [0.0, 0.1, 0.3, 1.0, 10.0]


def strength_table(dr: dict[str, list[float]], se: float = 0.0015, strengths=STRENGTHS) -> pd.DataFrame:
    """A comparison table over ``strengths`` with the given Δr per target and intervals of bootstrap SE ``se``."""
    n = len(strengths)
    table = pd.DataFrame({"job": range(n), "run_name": [f"s{s}" for s in strengths], "strength": strengths})
    for t, values in dr.items():
        table[f"dr_{t}"] = values
        table[f"dr_{t}_ci_low"] = np.array(values) - 1.96 * se
        table[f"dr_{t}_ci_high"] = np.array(values) + 1.96 * se
        table[f"dr_{t}_p"] = 0.05
    table["n_eval"] = 182.0
    table["eval_split"] = "val"
    table["oracle"] = "true"
    table["status"] = "FINISHED"
    table["run_id"] = [f"run{i}" for i in range(n)]
    return table


# lrm on the demo: a jump from s = 0, then about the same Δr at every s > 0 (its normalisation cancels s)
LRM = {
    "valence": [-0.0076, 0.00295, 0.00270, 0.00265, 0.00264],
    "arousal": [-0.0065, 0.00231, 0.00302, 0.00311, 0.00311],
}
# a graded response: Δr grows with strength by several SEs
GRADED = {"valence": [-0.005, -0.003, 0.0, 0.006, 0.016], "arousal": [-0.004, -0.003, -0.001, 0.002, 0.007]}


def test_rows_tied_with_the_best_go_to_the_smallest_strength():
    table = strength_table(LRM)
    selection = conf.select(table, "mean_dr")
    assert selection.best["strength"] == 1.0  # the largest criterion, by margins far below an SE
    assert list(selection.tied["strength"]) == [0.1, 0.3, 1.0, 10.0]
    assert conf.choose(table, "mean_dr")["strength"] == 0.1
    # the tolerance is a quarter of the best row's bootstrap SE (here 0.0015)
    assert selection.tolerance == pytest.approx(ties.TIE_SE_FRACTION * 0.0015, rel=1e-4)  # 1.96 vs 1.95996
    text = conf.describe_selection(selection, "mean_dr")
    assert "tied" in text and "smallest strength" in text and "strength 0.1" in text


def test_a_clear_best_is_not_a_tie_and_numerically_equal_rows_are():
    graded = strength_table(GRADED)
    selection = conf.select(graded, "mean_dr")
    assert selection.row["strength"] == 10.0 and not selection.is_tie
    # no interval known: only numerically equal rows tie; the earliest job wins among equal strengths
    equal = strength_table({"valence": [0.01, 0.02, 0.02 + 1e-9, 0.02 - 1e-9, 0.019], "arousal": [0.0] * 5})
    equal = equal.drop(columns=[c for c in equal if c.endswith(("_ci_low", "_ci_high"))])
    assert conf.choose(equal, "dr_valence")["strength"] == 0.1
    assert conf.choose(equal.assign(strength=np.nan), "dr_valence")["job"] == 1


def test_strength_responses_are_called_flat_step_or_graded():
    kinds = {(s.target, s.kind) for s in ties.response_shapes(strength_table(LRM))}
    assert kinds == {("valence", "step"), ("arousal", "step")}
    assert {s.kind for s in ties.response_shapes(strength_table(GRADED))} == {"graded"}
    flat = strength_table({"valence": [0.001, 0.0011, 0.001, 0.0009, 0.001], "arousal": GRADED["arousal"]})
    shapes = {s.target: s for s in ties.response_shapes(flat)}
    assert shapes["valence"].kind == "flat" and shapes["arousal"].kind == "graded"
    lines = ties.describe_shapes(shapes.values())
    assert len(lines) == 1 and "Δr valence is flat" in lines[0]
    # per group of the other choices: lrm steps, bypass grows
    both = pd.concat([strength_table(LRM).assign(method="lrm"), strength_table(GRADED).assign(method="bypass")])
    by_group = {(s.where["method"], s.kind) for s in ties.response_shapes(both.reset_index(drop=True))}
    assert by_group == {("lrm", "step"), ("bypass", "graded")}


def _predictions(values: np.ndarray, rating: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"audio_name": [f"c{i}" for i in range(len(rating))], "steered": True})
    for t in ("valence", "arousal"):
        frame[t], frame[f"base_{t}"], frame[f"steered_{t}"] = rating, np.zeros_like(rating), values
    return frame


def test_steerability_flags_a_step_instead_of_a_wrong_way_share():
    rating = np.array([1.0, -1.0, 0.5, -0.5])
    jump = np.array([0.2, 0.1, -0.1, 0.3])  # every s > 0: the same predictions, up to a tiny drift
    preds = {"run0": _predictions(np.zeros(4), rating)}
    for i, s in enumerate(STRENGTHS[1:], start=1):
        preds[f"run{i}"] = _predictions(jump * (1 + 0.001 * s), rating)
    table = strength_table(LRM)
    summary = steerability.summarise(steerability.steerability_table(table, preds.__getitem__))
    assert set(summary["response"]) == {"step"}
    text = "\n".join(steerability.describe_steerability(summary))
    assert "step response" in text and "% wrong way," not in text
    # the same clips moving in proportion to the strength are a graded response, summarised as before
    graded = {f"run{i}": _predictions(jump * s, rating) for i, s in enumerate(STRENGTHS)}
    summary = steerability.summarise(steerability.steerability_table(table, graded.__getitem__))
    assert set(summary["response"]) == {"graded"}
    assert "% wrong way," in "\n".join(steerability.describe_steerability(summary))


def _confirmation() -> pd.DataFrame:
    rows = []
    for t, dr, low, high, p in (("valence", 0.0036, 0.0011, 0.0064, 0.0044), ("arousal", 0.0064, 0.0033, 0.01, 7e-8)):
        rows.append(
            {
                "criterion": "mean_dr",
                "choice": "strength=0.1",
                "job": 1,
                "selected_on": "val",
                "confirmed_on": "test",
                "tied_rows": 4,
                "confirmed_n": 182.0,
                "target": t,
                "confirmed_dr": dr,
                "confirmed_dr_ci_low": low,
                "confirmed_dr_ci_high": high,
                "confirmed_dr_p": p,
            }
        )
    return pd.DataFrame(rows)


def test_terminal_says_split_and_n_spells_out_targets_and_ends_with_the_confirmed_figures():
    table = strength_table(LRM)
    notes = ties.describe_shapes(ties.response_shapes(table))
    report = SweepReport(tbl.SweepRuns("sid", None, []), table, None, [], notes, _confirmation())
    text = terminal_text(report)
    assert "scored on the `val` split (n = 182 clips each)" in text
    assert "Δr valence is a step" in text and "Δr arousal is a step" in text
    header = next(line for line in text.splitlines() if line.startswith("job"))
    assert "Δr valence" in header and "Δr arousal" in header and "Δr val " not in header
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Confirmed on"))
    assert start > next(i for i, line in enumerate(lines) if line.startswith("---"))  # after the table
    confirmed = " ".join(line.strip() for line in lines[start:-2])
    assert confirmed.startswith("Confirmed on `test`, n = 182 clips") and "4 rows were tied" in confirmed
    assert lines[-2].strip() == "Δr valence: +0.0036 [+0.0011, +0.0064], p = 0.0044"
    assert lines[-1].strip().startswith("Δr arousal: +0.0064")
    assert max(len(line) for line in text.splitlines()) <= 100


def _log_confirmed_sweep(uri: str) -> tuple[MlflowClient, tbl.SweepRuns]:
    """A sweep over strength on val with a confirmation child on test, as the callback leaves it."""
    experiment_id = configure(uri, "steering")
    client = MlflowClient(uri)
    tags = {"sweep_id": "sw", "sweep_role": "parent", "sweep_varied": '["strength"]', "sweep_experiment": "strengths"}
    parent_run = client.create_run(experiment_id, run_name="sweep-sw", tags=tags)
    ids = []
    for num, s in enumerate(STRENGTHS):
        child = {"mlflow.parentRunId": parent_run.info.run_id, "sweep_id": "sw", "sweep_job_num": str(num)}
        child["sweep_overrides"] = json.dumps([f"strength={s}"])
        run = client.create_run(experiment_id, run_name=f"s{s}", tags=child)
        client.log_param(run.info.run_id, "strength", s)
        client.log_param(run.info.run_id, "data.eval_split", "val")
        for t in ("valence", "arousal"):
            dr = LRM[t][num]
            for name, value in ((f"dr_{t}", dr), (f"dr_{t}_ci_low", dr - 0.003), (f"dr_{t}_ci_high", dr + 0.003)):
                client.log_metric(run.info.run_id, name, value)
            client.log_metric(run.info.run_id, f"dr_{t}_p", 0.05)
        client.log_metric(run.info.run_id, "n_eval", 182)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    confirm = {"mlflow.parentRunId": parent_run.info.run_id, "sweep_id": "sw", "sweep_role": "confirmation"}
    confirm.update(confirmation_of=ids[1], confirmation_criterion="mean_dr", sweep_job_num="confirmation")
    run = client.create_run(experiment_id, run_name="confirm", tags=confirm)
    client.log_param(run.info.run_id, "data.eval_split", "test")
    for t, dr in (("valence", 0.0036), ("arousal", 0.0064)):
        for name, value in ((f"dr_{t}", dr), (f"dr_{t}_ci_low", dr - 0.002), (f"dr_{t}_ci_high", dr + 0.002)):
            client.log_metric(run.info.run_id, name, value)
        client.log_metric(run.info.run_id, f"dr_{t}_p", 0.004)
    client.log_metric(run.info.run_id, "n_eval", 181)
    client.set_terminated(run.info.run_id, "FINISHED")
    return client, tbl.find_sweep(client, "sw")


def test_parent_description_leads_with_the_confirmed_figures_and_the_notes_state_the_tie(tmp_path):
    client, runs = _log_confirmed_sweep(f"sqlite:///{tmp_path}/mlflow.db")
    table = tbl.comparison_table(runs.children, runs.varied)
    assert list(table["eval_split"]) == ["val"] * 5 and list(table["n_eval"]) == [182] * 5
    parent.annotate_parent(client, runs.parent.info.run_id, runs, table, "sw")
    note = client.get_run(runs.parent.info.run_id).data.tags[parent.NOTE_TAG]
    first = [line for line in note.splitlines() if line.strip()][1:4]
    assert first[0].startswith("**Confirmed on `test`, n = 181 clips") and "strength=0.1" in first[0]
    assert first[1] == "- Δr valence: +0.0036 [+0.0016, +0.0056], p = 0.004"
    assert note.index("Confirmed on `test`") < note.index("best Δr valence")
    assert "scored on the `val` split (n = 182 clips each)" in note
    assert note.index("Δr valence is a step") < note.index("best Δr valence")  # no best strength to report
    notes = conf.selection_notes(runs.children, table)
    assert any("4 rows were tied" in line and "chosen: job 1, strength 0.1" in line for line in notes)
    md = tbl.describe(table, "sw", notes)
    assert "Rows were scored on the `val` split (n = 182 clips each)." in md


def test_forest_plot_of_a_controls_sweep_shows_the_contrasts_with_their_intervals(tmp_path):
    categories = ["oracle", "shuffled", "mean"]
    table = strength_table({"valence": [0.01, 0.002, 0.001], "arousal": [0.004, 0.0, -0.001]}, strengths=[2.0] * 3)
    table["category"] = categories
    contrasts = pd.DataFrame(
        [
            {"target": t, "condition": "oracle", "control": c, "contrast": v, "ci_low": v - 0.003, "ci_high": v + 0.003}
            | {"p": 0.01}
            for t in ("valence", "arousal")
            for c, v in (("shuffled", 0.008 if t == "valence" else 0.004), ("mean", 0.009 if t == "valence" else 0.005))
        ]
    )
    context = figures.FigureContext("sid", "controls", ["category"], {"method": "bypass"}, contrasts=contrasts)
    fig = figures.draw_forest(table, context)
    assert len(fig.axes) == 4  # Δr per row (top), condition − control (bottom), per target
    for ax, t in zip(fig.axes[2:], ("valence", "arousal")):
        centres = [float(line.get_xdata()[0]) for line in ax.lines if line.get_marker() == "D"]
        assert centres == pytest.approx(list(contrasts.loc[contrasts["target"] == t, "contrast"]))
        assert "condition − control" in ax.get_xlabel()
    labels = [x.get_text() for x in fig.axes[2].get_yticklabels()]
    assert labels == ["oracle − shuffled", "oracle − mean"]
    title = fig.get_suptitle()
    assert "beat the controls" in title and "scored on val, n = 182 clips" in title
    assert figures.forest_figure(table, tmp_path / "forest.png", context).stat().st_size > 10_000
    assert len(figures.draw_forest(table, figures.FigureContext("sid")).axes) == 2  # no contrasts: Δr only


def test_strength_figure_says_step_in_the_panel_and_asks_its_question():
    table = strength_table(LRM)
    context = figures.FigureContext("sid", "strengths", ["strength"], {}, ties.response_shapes(table))
    fig = figures.draw_strength(table, context)
    for ax in fig.axes:
        assert any(text.get_text().startswith("step:") for text in ax.texts)
    assert "How does Δr change with the steering strength?" in fig.get_suptitle()
    assert "scored on val, n = 182 clips" in fig.get_suptitle()
    graded = figures.draw_strength(strength_table(GRADED), figures.FigureContext("sid"))
    assert not any(ax.texts for ax in graded.axes)


def test_one_positive_strength_still_shows_its_interval():
    """A band over a single strength has no width: that row's interval must be drawn as a bar."""
    table = strength_table({"valence": [0.1, -0.08], "arousal": [-0.2, -0.09]}, se=0.1, strengths=[0.0, 1.0])
    fig = figures.draw_strength(table, figures.FigureContext("sid"))
    for ax, t in zip(fig.axes, ("valence", "arousal")):
        bars = [c for c in ax.containers if list(c.lines[0].get_xdata()) == [1.0]]
        assert len(bars) == 1, t
        (segments,) = [lc.get_segments() for lc in bars[0].lines[2]]
        low, high = segments[0][:, 1]
        assert (low, high) == pytest.approx((table.loc[1, f"dr_{t}_ci_low"], table.loc[1, f"dr_{t}_ci_high"]))


def test_links_open_the_model_training_view():
    assert links.run_path("3") == "#/experiments/3/runs?workflowType=machine_learning"
    assert links.run_path("3", "abc") == "#/experiments/3/runs/abc?workflowType=machine_learning"
    assert "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning" in links.how_to_open(
        "sqlite:///x.db", "3", "abc"
    )


def test_run_summary_shows_ccc_and_mae_beside_delta_r(compose_run):
    from steering.tracking.job import summary

    metrics = {"n_eval": 40.0, "coverage": 1.0, "feedback_effect": 0.1}
    for i, t in enumerate(("valence", "arousal")):
        metrics.update({f"r_base_{t}": 0.7, f"r_steered_{t}": 0.71, f"dr_{t}": 0.01, f"dr_{t}_p": 0.2})
        metrics.update({f"dr_{t}_ci_low": -0.01, f"dr_{t}_ci_high": 0.03})
        metrics.update(
            {f"ccc_base_{t}": 0.61 + i, f"ccc_steered_{t}": 0.62, f"mae_base_{t}": 9.9, f"mae_steered_{t}": 0.25}
        )
    text = summary(compose_run(), RunResult(metrics, pd.DataFrame(), pd.DataFrame()))
    lines = text.splitlines()
    assert "CCC 0.6100 -> 0.6200" in lines[2] and "MAE 9.9000 -> 0.2500" in lines[2]
    assert "CCC 1.6100 -> 0.6200" in lines[4]
    assert formats.format_cell("dr_valence", 0.01) in lines[1]
