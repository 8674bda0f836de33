"""The intervention ledger: ModBlock stages, gains, changes, took_effect, the summary line and ledger.png."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from steering.engine import SteeringSpec, method_modulation, select_connections
from steering.engine.ledger import (
    STRENGTH_FREE,
    effect,
    gain_stats,
    ledger_notes,
    probe_ledger,
    stage_stats,
)
from steering.model.lrm import normalize_per_sample
from steering.tracking.job import evaluate, summary


def _inputs(batch=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, 32, 64, generator=g) * 5 - 30
    signals = {p: torch.rand(batch, 128, generator=g) * 2 for p in ("valence", "arousal")}
    return features, signals


def _direct_stages(block, v: torch.Tensor, method: str, s: float) -> dict:
    """Each stage of the ModBlock written out from its weights, as docs/model.md describes it."""
    x = v * s if method in ("lrm", "bypass") else v
    stages = {"raw": x}
    full = method != "bypass"
    stages["normalized"] = normalize_per_sample(x) if full else None
    stages["squashed"] = torch.tanh(stages["normalized"]) if full else None
    h = stages["squashed"] if full else x
    conv = h @ block.rescale.resize.conv1x1.weight.flatten(1).T
    mult = s if method == "modulation" else 1.0
    gained = torch.where(conv < 0, conv * block.neg_scale * mult, conv * block.pos_scale * mult)
    m = gained @ block.modulation.weight.flatten(1).T + block.modulation.bias
    stages.update(conv=conv, gained=gained, m=m, modulation=m * s if method == "direct" else m)
    return stages


@pytest.mark.parametrize("method", ["lrm", "bypass", "modulation", "direct"])
def test_ledger_stages_match_a_direct_computation_through_the_modblock(tiny_model, method):
    features, signals = _inputs()
    spec = SteeringSpec(select_connections(tiny_model.connections, "valence", "conv4"), method=method, strength=1.7)
    ledger = probe_ledger(tiny_model, spec, features, signals)
    conn = next(iter(spec.connections))
    with torch.no_grad():
        expected = _direct_stages(tiny_model.modblock(conn), signals["valence"], method, 1.7)
    stages = ledger["connections"][str(conn)]["stages"]
    assert list(stages) == list(expected)
    for stage, tensor in expected.items():
        if tensor is None:
            assert stages[stage] is None, stage  # bypass switches normalisation and tanh off
            continue
        for stat, value in stage_stats(tensor).items():
            assert stages[stage][stat] == pytest.approx(value, rel=1e-5, abs=1e-6), (stage, stat)
    assert ledger["clips"] == features.shape[0]


def test_a_trace_leaves_the_modulation_bit_identical(tiny_model):
    _, signals = _inputs()
    block = tiny_model.modblock(tiny_model.connections[0])
    s = torch.full((6,), 0.8)
    for method in ("lrm", "bypass", "modulation", "direct"):
        trace: dict = {}
        with torch.no_grad():
            plain = method_modulation(block, signals["valence"], method, s)
            traced = method_modulation(block, signals["valence"], method, s, trace)
        assert torch.equal(plain, traced)
        assert torch.equal(trace["modulation"], plain.flatten(1))


def test_gain_shares_on_a_constructed_gain(tiny_model):
    # 1 + m with m = bias only: half the channels get gain -1 (silenced), a quarter 2.5 (doubled).
    conn = tiny_model.connections[0]
    block = tiny_model.modblock(conn)
    channels = block.modulation.bias.numel()
    bias = torch.full((channels,), 0.5)
    bias[: channels // 2] = -2.0
    bias[channels // 2 : channels // 2 + channels // 4] = 1.5
    with torch.no_grad():
        block.modulation.weight.zero_()
        block.modulation.bias.copy_(bias)
    features, signals = _inputs()
    spec = SteeringSpec(frozenset([conn]), method="direct", strength=1.0)
    gain = probe_ledger(tiny_model, spec, features, signals)["connections"][str(conn)]["gain"]
    assert gain["silenced_share"] == pytest.approx((channels // 2) / channels)
    assert gain["doubled_share"] == pytest.approx((channels // 4) / channels)
    assert gain["mean"] == pytest.approx(float((1 + bias).mean()), rel=1e-6)
    assert gain_stats(torch.tensor([[-1.0, 0.0, 0.5, 3.0]]))["silenced_share"] == 0.5  # gain 0 is silenced too
    share = {f"gain_{conn.pathway}_{conn.layer}_silenced_share": 0.51}
    assert any(f"{conn.pathway}->{conn.layer} silences 51%" in n for n in ledger_notes(share, "direct", 1.0))
    assert not ledger_notes({**share, f"gain_{conn.pathway}_{conn.layer}_silenced_share": 0.5}, "direct", 1.0)


def test_lrm_cannot_depend_on_strength_and_the_other_methods_can(tiny_model):
    features, signals = _inputs()
    changes = {}
    for method in ("lrm", "modulation", "direct", "bypass"):
        spec = SteeringSpec(select_connections(tiny_model.connections, "valence", "conv4"), method=method, strength=3)
        entry = probe_ledger(tiny_model, spec, features, signals)["connections"]["valence->conv4"]
        changes[method] = entry["strength_change"]
    assert changes["lrm"] < STRENGTH_FREE
    assert all(changes[m] > STRENGTH_FREE for m in ("modulation", "direct", "bypass")), changes


def test_took_effect_uses_a_tolerance_of_float_noise():
    base = {"valence": np.array([0.5, -2.0]), "arousal": np.array([1.0, 0.0])}
    same = {t: v[None, :].astype(np.float32).astype(np.float64) for t, v in base.items()}
    assert effect(base, same, "fp32")["took_effect"] == 0
    moved = {t: v[None, :].copy() for t, v in base.items()}
    moved["arousal"][0, 1] += 1e-4
    assert effect(base, moved, "fp32")["took_effect"] == 1
    assert effect(base, moved, "bf16")["took_effect"] == 0  # within bf16's noise


def test_own_activation_with_own_gains_takes_no_effect_and_says_so(assets, compose_run):
    quiet_cfg = compose_run("alpha=0", "method=modulation", "strength=1")
    quiet = evaluate(quiet_cfg)
    loud = evaluate(compose_run("alpha=1", "method=modulation", "strength=1"))
    assert quiet.metrics["took_effect"] == 0.0 and loud.metrics["took_effect"] == 1.0
    assert quiet.metrics["embedding_change"] == 0.0 and loud.metrics["embedding_change"] > 0
    assert quiet.metrics["block_change_valence_conv4"] == 0.0
    assert "no effect: the steered predictions equal the baseline" in summary(quiet_cfg, quiet)
    assert "no effect" not in summary(compose_run("alpha=1", "method=modulation", "strength=1"), loud)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    local = client.download_artifacts(loud.run_id, "ledger.json", str(assets["tmp"]))
    ledger = json.loads(Path(local).read_text())
    assert ledger["took_effect"] == 1 and ledger["method"] == "modulation"
    assert ledger["connections"]["valence->conv4"]["gain"]["mean"] == pytest.approx(
        loud.metrics["gain_valence_conv4_mean"]
    )


def test_a_sweep_draws_the_ledger_figure(sweep_assets, run_sweep):
    proc, sweep_dir, _ = run_sweep(sweep_assets, "ledger", "method=lrm,modulation", "strength=0,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep_dir / "ledger.png").stat().st_size > 10_000
    table = pd.read_csv(sweep_dir / "comparison.csv")
    lrm = table[(table["method"] == "lrm") & (table["strength"] == 2)]
    assert (lrm["took_effect"] == 1).all() and (lrm["gain_mean"].notna()).all()


@pytest.mark.parametrize("overrides", [("category=random", "category.draws=3"), ("priming=true", "pathway=dual")])
def test_multi_draw_and_primed_runs_keep_a_ledger(assets, compose_run, overrides):
    result = evaluate(compose_run(*overrides, "layer=all" if "pathway=dual" in overrides else "layer=conv4"))
    ledger = result.documents["ledger.json"]
    assert ledger["clips"] == 16 and ledger["connections"]
    for conn in ledger["connections"]:
        pathway, layer = conn.split("->")
        assert 0.0 <= result.metrics[f"gain_{pathway}_{layer}_silenced_share"] <= 1.0
        assert result.metrics[f"block_change_{pathway}_{layer}"] >= 0.0
    assert result.metrics["took_effect"] == 1.0 and result.metrics["embedding_change"] > 0


def test_a_result_directory_lists_its_ledger_as_an_artifact_with_nan_as_null(tmp_path):
    from steering.tracking.results import artifact_files, write_results

    table = pd.DataFrame({"a": [1]})
    ledger = {"took_effect": 0, "embedding_change": float("nan"), "connections": {}}
    write_results(
        tmp_path, {"took_effect": 0.0}, {"predictions.csv": table}, "x: 1\n", {}, documents={"ledger.json": ledger}
    )
    assert tmp_path / "ledger.json" in artifact_files(tmp_path)
    assert json.loads((tmp_path / "ledger.json").read_text())["embedding_change"] is None


def test_the_ledger_figure_per_method_when_strength_is_fixed(tmp_path):
    from steering.sweep.figures import FigureContext
    from steering.sweep.ledger_figure import ledger_figure

    columns = ("took_effect", "gain_mean", "gain_silenced_share", "gain_doubled_share", "block_change")
    rows = [
        dict.fromkeys(columns, v) | {"embedding_change": v, "method": m} for m, v in (("lrm", 0.0), ("direct", 1.0))
    ]
    table = pd.DataFrame(rows).assign(strength=2.0, status="FINISHED", oracle="true", n_eval=10, eval_split="val")
    assert ledger_figure(table, tmp_path / "ledger.png", FigureContext("s", varied=["method"])).stat().st_size > 10_000
    assert ledger_figure(table.drop(columns=["took_effect"]), tmp_path / "none.png") is None  # runs without a ledger
