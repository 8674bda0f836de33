"""The steering engine: method properties, per-layer selection, shared-work reuse."""

from __future__ import annotations

import pytest
import torch

from steering.engine import (
    METHODS,
    SteeringConfigError,
    SteeringSpec,
    select_connections,
    shared_pass,
    steer_direct,
    steer_from_shared,
)
from steering.model import Connection


def _inputs(batch=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 32, 64, generator=g) * 5 - 30
    signals = {p: torch.rand(batch, 128, generator=g) for p in ("valence", "arousal")}
    return x, signals


def _spec(model, pathway="valence", layer="conv4", **kw):
    return SteeringSpec(select_connections(model.connections, pathway, layer), **kw)


def _run(model, spec, x, signals, mask=None):
    mask = torch.ones(x.shape[0], dtype=torch.bool) if mask is None else mask
    return steer_direct(model, x, spec, signals, mask)


def test_lrm_gives_the_same_output_for_every_positive_strength(tiny_model):
    x, sig = _inputs()
    outs = [_run(tiny_model, _spec(tiny_model, method="lrm", strength=s), x, sig) for s in (0.5, 1.0, 7.0)]
    # Equal up to the 1e-5 epsilon of the normalisation, which does not scale with s.
    for out in outs[1:]:
        torch.testing.assert_close(out["valence"], outs[0]["valence"], rtol=1e-3, atol=1e-4)
    base = tiny_model(x)["valence"].view(-1)
    assert (outs[0]["valence"] - base).abs().max() > 1e-4  # but it does steer


def test_direct_with_zero_strength_leaves_exactly_the_chosen_connection_unmodulated(tiny_model):
    x, sig = _inputs()
    spec = _spec(tiny_model, layer="conv4", method="direct", strength=0.0)
    got = _run(tiny_model, spec, x, sig)
    first = tiny_model.feedforward(x)
    mods = tiny_model.modulations(first)
    mods[Connection("valence", "conv4")] = torch.zeros_like(mods[Connection("valence", "conv4")])
    expected = tiny_model.feedforward(x, tiny_model.gains_from(mods))
    assert torch.equal(got["valence"], expected["valence"].view(-1))
    assert not torch.allclose(got["valence"], tiny_model(x)["valence"].view(-1))


def test_modulation_with_unit_strength_is_plain_signal_replacement(tiny_model):
    x, sig = _inputs()
    got = _run(tiny_model, _spec(tiny_model, method="modulation", strength=1.0), x, sig)
    first = tiny_model.feedforward(x)
    sources = {"valence_128d": sig["valence"], "arousal_128d": first["arousal_128d"]}
    mods = tiny_model.modulations(first)
    mods[Connection("valence", "conv4")] = tiny_model.modblock(Connection("valence", "conv4"))(sources["valence_128d"])
    expected = tiny_model.feedforward(x, tiny_model.gains_from(mods))
    torch.testing.assert_close(got["valence"], expected["valence"].view(-1), rtol=1e-6, atol=1e-6)
    lrm = _run(tiny_model, _spec(tiny_model, method="lrm", strength=1.0), x, sig)
    torch.testing.assert_close(got["arousal"], lrm["arousal"])


def test_bypass_changes_with_the_signal_scale(tiny_model):
    x, sig = _inputs()
    a = _run(tiny_model, _spec(tiny_model, method="bypass", strength=1.0), x, sig)
    b = _run(tiny_model, _spec(tiny_model, method="bypass", strength=3.0), x, sig)
    scaled = {p: 3.0 * v for p, v in sig.items()}
    c = _run(tiny_model, _spec(tiny_model, method="bypass", strength=1.0), x, scaled)
    assert (a["valence"] - b["valence"]).abs().max() > 1e-4
    torch.testing.assert_close(b["valence"], c["valence"])


def test_conv3_and_conv4_give_different_predictions(tiny_model):
    x, sig = _inputs()
    conv3 = _run(tiny_model, _spec(tiny_model, layer="conv3"), x, sig)
    conv4 = _run(tiny_model, _spec(tiny_model, layer="conv4"), x, sig)
    assert (conv3["valence"] - conv4["valence"]).abs().max() > 1e-4


def test_impossible_pathway_layer_pair_names_what_exists(tiny_model):
    with pytest.raises(SteeringConfigError, match=r"arousal->conv4.*it has: arousal->conv1, arousal->conv2"):
        select_connections(tiny_model.connections, "arousal", "conv4")
    assert len(select_connections(tiny_model.connections, "dual", "all")) == 4
    assert select_connections(tiny_model.connections, "valence", "all") == {
        Connection("valence", "conv3"),
        Connection("valence", "conv4"),
    }


def test_samples_without_signal_keep_the_baseline(tiny_model):
    x, sig = _inputs()
    mask = torch.tensor([True, False, True, False])
    out = _run(tiny_model, _spec(tiny_model, method="bypass", strength=4.0), x, sig, mask)
    base = tiny_model(x)["valence"].view(-1)
    torch.testing.assert_close(out["valence"][~mask], base[~mask])
    assert (out["valence"][mask] - base[mask]).abs().min() > 0


@pytest.mark.parametrize("layer, pathway", [("conv4", "valence"), ("all", "valence"), ("all", "dual")])
@pytest.mark.parametrize("method", ["lrm", "bypass", "modulation", "direct"])
def test_shared_work_gives_the_same_predictions_as_whole_passes(tiny_model, layer, pathway, method):
    x, sig = _inputs()
    mask = torch.tensor([True, True, False, True])
    strengths = torch.tensor([0.0, 0.5, 2.0])
    spec = _spec(tiny_model, pathway=pathway, layer=layer, method=method, alpha=0.7)
    shared = shared_pass(tiny_model, x, spec.first_block)
    torch.testing.assert_close(shared.baseline["valence"], tiny_model(x)["valence"], rtol=0, atol=0)
    fast = steer_from_shared(tiny_model, shared, spec, sig, mask, strengths)
    for i, s in enumerate(strengths.tolist()):
        slow = _run(
            tiny_model,
            _spec(tiny_model, pathway=pathway, layer=layer, method=method, alpha=0.7, strength=s),
            x,
            sig,
            mask,
        )
        for t in ("valence", "arousal"):
            # The tiny random model's outputs reach 1e5, so batch-size-dependent GEMM rounding shows
            # at ~3e-5 relative; benchmarks/sweep.py checks 1e-5 absolute on a realistically scaled model.
            torch.testing.assert_close(fast[t][i], slow[t], rtol=1e-4, atol=1e-5)


def test_priming_steers_pass_one(tiny_model):
    x, sig = _inputs()
    plain = _run(tiny_model, _spec(tiny_model, method="bypass", strength=2.0), x, sig)
    primed = _run(tiny_model, _spec(tiny_model, method="bypass", strength=2.0, priming=True), x, sig)
    assert (plain["valence"] - primed["valence"]).abs().max() > 1e-5


def test_chunk_plan_respects_the_byte_budget():
    from steering.engine.chunked import plan_chunks

    chunks = plan_chunks(100, 16, bytes_per_clip=1000, budget=40_000)
    assert [(c.start, c.stop) for c in chunks] == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert [(c.start, c.stop) for c in plan_chunks(10, 16, 10**9)] == [(0, 10)]


def test_chunked_shared_work_and_small_steering_batches_match_one_batch(tiny_model):
    from steering.engine.chunked import shared_chunk, steer_chunk

    x, sig = _inputs(batch=5)
    mask = torch.tensor([True, False, True, True, True])
    strengths = torch.tensor([0.5, 2.0])
    spec = _spec(tiny_model, pathway="dual", layer="all", method="bypass")
    whole = steer_from_shared(tiny_model, shared_pass(tiny_model, x, spec.first_block), spec, sig, mask, strengths)
    shared = shared_chunk(tiny_model, lambda rows: x[rows], slice(0, 5), spec.first_block, batch_size=2)
    assert shared.prefix.shape[0] == 5 and not shared.pooled
    parts = steer_chunk(tiny_model, shared, spec, sig, mask, strengths, batch_size=2)
    for t in ("valence", "arousal"):
        torch.testing.assert_close(parts[t], whole[t], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the method registry
def test_a_spec_takes_exactly_the_registered_methods(tiny_model):
    for name in METHODS:
        assert _spec(tiny_model, method=name).method == name
    with pytest.raises(SteeringConfigError, match="unknown method 'boost'; expected one of .*'lrm'"):
        _spec(tiny_model, method="boost")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_registered_method_moves_only_the_rows_with_a_signal(tiny_model, method):
    x, sig = _inputs()
    mask = torch.tensor([True, False, True, True])
    out = _run(tiny_model, _spec(tiny_model, method=method, strength=2.0), x, sig, mask)
    base = tiny_model(x)["valence"].view(-1)
    torch.testing.assert_close(out["valence"][~mask], base[~mask], rtol=0, atol=0)
    assert (out["valence"][mask] - base[mask]).abs().max() > 0
