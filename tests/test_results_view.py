"""Tables and figures a person reads: number formats, the 100-column terminal view, forest and strength figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from steering.sweep import figures, formats


def sweep_table(choices: dict[str, list], seed: int = 0) -> pd.DataFrame:
    """A comparison table as steering.sweep.table.comparison_table builds it, with made-up numbers."""
    n = len(next(iter(choices.values())))
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"job": range(n), "run_name": [f"run{i}" for i in range(n)], **choices})
    for t in ("valence", "arousal"):
        dr = rng.normal(0.01, 0.01, n)
        table[f"r_base_{t}"] = 0.7
        table[f"r_steered_{t}"] = 0.7 + dr
        table[f"dr_{t}"] = dr
        table[f"dr_{t}_ci_low"] = dr - 0.005
        table[f"dr_{t}_ci_high"] = dr + 0.005
        table[f"dr_{t}_p"] = 10.0 ** -rng.uniform(0, 12, n)
    table["coverage"] = 1.0
    table["oracle"] = "true"
    table["status"] = "FINISHED"
    table["run_id"] = [f"{i:032x}" for i in range(n)]
    return table


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("dr_valence", 0.0065471, "+0.0065"),
        ("dr_valence", -1.7e-10, "+0.0000"),  # never "-0.0000"
        ("diff_dr_arousal", -0.00031, "-0.0003"),
        ("r_base_valence", 0.76441, "0.7644"),
        ("dr_valence_p", 0.0338332, "0.034"),
        ("dr_valence_p", 6.8567e-07, "6.9e-07"),
        ("dr_valence_p", 0.47781, "0.48"),
        ("dr_arousal_q", 0.0020342, "0.002"),
        ("p_holm_valence", 0.00786, "0.0079"),
        ("strength", 1.5, "1.5"),
        ("strength", 10.0, "10"),
        ("coverage", 0.978, "97.8%"),
        ("dr_valence", math.nan, ""),
    ],
)
def test_number_formats(column, value, text):
    assert formats.format_cell(column, value) == text


def test_markdown_uses_the_shared_formats():
    table = sweep_table({"method": ["lrm", "bypass"], "strength": [1.0, 2.0]})
    table.loc[0, "dr_valence_p"] = 0.0338332
    table.loc[0, "dr_valence"] = 0.0065471
    md = formats.to_markdown(table)
    row = md.splitlines()[2]
    assert "| +0.0065 |" in row and "| 0.034 |" in row and "0.0338" not in row


def test_terminal_view_fits_100_columns_even_for_wide_sweeps():
    approaches = ["25bin_dual", "9bin_dual", "9bin_valence", "9bin_arousal", "9bin_valence_conv4"]
    table = sweep_table(
        {
            "approach": approaches,
            "binning": ["25bin", "9bin", "9bin", "9bin", "9bin"],
            "pathway": ["dual", "dual", "valence", "arousal", "valence"],
            "layer": ["all", "all", "all", "all", "conv4"],
            "category": ["oracle", "predicted", "shuffled", "random", "mean"],
        }
    )
    table.loc[2, "status"] = "FAILED"
    choices = ["approach", "binning", "pathway", "layer", "category"]
    text = formats.terminal_view(table, choices, width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert len(lines) == 2 + len(table)
    assert "FAILED" in lines[4]  # job 2's row carries its status
    assert lines[0].split()[:2] == ["job", "approach"]
    # a narrow sweep keeps the intervals
    narrow = formats.terminal_view(sweep_table({"strength": [0.0, 1.0]}), ["strength"], width=100)
    assert "95% CI" in narrow and max(len(line) for line in narrow.splitlines()) <= 100


def test_terminal_view_drops_choices_a_named_variant_fixes_before_shortening_names():
    from steering.sweep import report

    variants = ["mean", "knn", "optimized", "optimized_permuted", "optimized_global"]
    table = sweep_table(
        {
            "signal_variant": variants,
            "category": ["oracle", "mean", "oracle", "oracle", "oracle"],
            "signals.method": ["mean", "knn", "optimized", "optimized", "optimized"],
            "signals.labels": ["observed", "observed", "observed", "permuted", "none"],
        }
    )
    table["dr_valence_q"] = table["dr_arousal_q"] = 0.5
    lines = report.terminal_view(table).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split()[:3] == ["job", "signal_variant", "Δr"]  # the columns the variant fixes are left out
    assert [line.split()[1] for line in lines[2:]] == variants  # every name in full
    # choices that vary on their own stay, even when names get shortened
    crossed = sweep_table({"method": ["lrm", "bypass"] * 2, "strength": [1.0, 1.0, 2.0, 2.0]})
    assert report.terminal_view(crossed).splitlines()[0].split()[:3] == ["job", "method", "strength"]


def test_forest_plot_for_a_sweep_that_does_not_vary_strength(tmp_path):
    table = sweep_table({"category": ["oracle", "predicted", "random"], "strength": [2.0, 2.0, 2.0]})
    table.loc[1, "oracle"] = "false"
    table.loc[2, ["status", "dr_valence", "dr_arousal"]] = ["FAILED", math.nan, math.nan]
    context = figures.FigureContext("sid-1", "controls", ["category"], {"method": "bypass"})
    fig = figures.draw_forest(table, context)
    valence, arousal = fig.axes
    assert [t.get_text() for t in valence.get_yticklabels()] == [
        "category=oracle (oracle)",
        "category=predicted",
        "category=random (oracle)",
    ]
    # one error bar per finished row in each panel, centred on that row's Δr; the failed row is labelled
    for ax, t in ((valence, "valence"), (arousal, "arousal")):
        centres = sorted(float(c.get_xdata()[0]) for c in ax.lines if c.get_marker() in figures.MARKERS)
        assert centres == pytest.approx(sorted(table[f"dr_{t}"].iloc[:2]))
        assert any(x.get_text() == "failed" for x in ax.texts)
        assert any(line.get_xdata()[0] == 0 and line.get_linestyle() == "--" for line in ax.lines)  # baseline
    title = fig.get_suptitle()
    assert "controls" in title and "sid-1" in title and "method bypass" in title and "strength 2" in title
    assert figures.forest_figure(table, tmp_path / "forest.png", context).stat().st_size > 10_000
    assert figures.draw_forest(sweep_table({"strength": [0.0, 1.0]})) is None  # strength varies: no forest


def test_strength_figure_does_not_join_zero_to_the_log_axis():
    table = sweep_table({"method": ["lrm"] * 4 + ["bypass"] * 4, "strength": [0, 0.5, 1, 10] * 2})
    context = figures.FigureContext("sid-2", "methods", ["method", "strength"], {})
    fig = figures.draw_strength(table, context)
    for ax in fig.axes:
        joined = [line for line in ax.lines if len(line.get_xdata()) > 1 and line.get_linestyle() == "-"]
        assert len(joined) == 2  # one line per method
        assert all(min(line.get_xdata()) > 0 for line in joined)  # s = 0 is a point of its own
        assert any(line.get_ydata()[0] == 0 and line.get_linestyle() == "--" for line in ax.lines)  # baseline
        colours = {line.get_color() for line in joined}
        assert colours <= set(figures.OKABE_ITO)
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend for both panels
    assert legend_texts == ["method=bypass", "method=lrm", "baseline (Δr = 0)"]
    assert "methods" in fig.get_suptitle() and "oracle" in fig.get_suptitle()
