"""The LRM model: checkpoint loading, ModBlock formulas, passes and the partial forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from steering import load_model
from steering.config.schema import ArchConf
from steering.model import CheckpointError, Connection, LRMEmotionNet, ModelConfig, load_backbone
from steering.model.checkpoint import reference_state_dict, save_checkpoint


def features(b=3, t=32, seed=1):
    return torch.randn(b, t, 64, generator=torch.Generator().manual_seed(seed)) * 5 - 30


def test_reference_checkpoint_loads_with_inferred_architecture(tiny_model, tiny_channels):
    assert tiny_model.config.channels == tiny_channels
    assert tiny_model.config.embedding_size == 16
    assert {str(c) for c in tiny_model.connections} == {
        "valence->conv4",
        "valence->conv3",
        "arousal->conv2",
        "arousal->conv1",
    }
    assert not tiny_model.training
    out = tiny_model(features())
    assert out["valence"].shape == (3, 1) and out["arousal"].shape == (3, 1)
    assert out["embedding"].shape == (3, 16)


def test_bare_and_flat_layouts_load_identically(tmp_path, tiny_model, reference_state):
    bare = tmp_path / "bare.pth"
    torch.save(reference_state(flat_lrm=True), bare)
    model = load_model(bare)
    x = features()
    torch.testing.assert_close(model(x)["valence"], tiny_model(x)["valence"], rtol=0, atol=0)


def test_missing_and_unexpected_keys_are_listed(tmp_path, reference_state):
    state = reference_state()
    del state["affective_arousal.2.bias"]
    state[
        "lrm.visual_system_base_conv_block4_modulation.from_affective_valence_128d_to_visual_system_base_conv_block4.extra"
    ] = torch.zeros(1)
    state["some_new_head.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys" in msg and "affective_arousal.2.bias" in msg
    assert "unexpected keys" in msg and "some_new_head.weight" in msg


def test_unused_keys_are_ignored_with_a_log_line(ref_checkpoint, caplog):
    with caplog.at_level("INFO"):
        load_model(ref_checkpoint)
    assert any("ignoring 5 unused keys" in r.message for r in caplog.records)


def test_modblock_matches_hand_computation(tiny_model):
    conn = Connection("valence", "conv3")
    block = tiny_model.modblock(conn)
    v = torch.rand(2, 128) * 3
    H, W = 5, 7
    # The ModBlock formulas of docs/model.md, computed on the full (H, W) map.
    z = (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False, keepdim=True) + 1e-5)
    t = torch.tanh(z).view(2, 128, 1, 1)
    t = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=True)
    r = torch.einsum("oi,bihw->bohw", block.rescale.resize.conv1x1.weight[:, :, 0, 0], t)
    r = torch.where(r < 0, r * block.neg_scale, r * block.pos_scale)
    m = torch.einsum("oi,bihw->bohw", block.modulation.weight[:, :, 0, 0], r) + block.modulation.bias.view(1, -1, 1, 1)
    got = block(v).expand(-1, -1, H, W)
    torch.testing.assert_close(got, m, rtol=1e-5, atol=1e-6)


def _plain_cnn6(model: LRMEmotionNet, x: torch.Tensor) -> torch.Tensor:
    """PANNs Cnn6 forward written out from the reference description, eval mode."""
    base = model.backbone
    h = x.unsqueeze(1).transpose(1, 3)
    h = F.batch_norm(h, base.bn0.running_mean, base.bn0.running_var, base.bn0.weight, base.bn0.bias, eps=1e-5)
    h = h.transpose(1, 3)
    for block in base.blocks:
        h = F.conv2d(h, block.conv1.weight, padding=2)
        bn = block.bn1
        h = F.avg_pool2d(F.relu(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias)), 2)
    h = h.mean(dim=3)
    h = h.max(dim=2).values + h.mean(dim=2)
    return F.relu(base.fc1(h))


def test_backbone_without_hooks_is_plain_cnn6(tiny_model):
    x = features()
    torch.testing.assert_close(tiny_model.backbone(x), _plain_cnn6(tiny_model, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiny_model(x, forward_passes=1)["embedding"], _plain_cnn6(tiny_model, x))


def test_two_passes_differ_and_use_pass1_activations(tiny_model):
    x = features()
    one, two = tiny_model(x, forward_passes=2, return_list=True)
    assert (one["valence"] - two["valence"]).abs().max() > 1e-4
    # pass 2 by hand: gains from pass-1 activations, out <- relu(out * (1 + sum m))
    mods = tiny_model.modulations(one)
    gains = tiny_model.gains_from(mods)
    h = tiny_model.backbone.stem(x)
    for i, block in enumerate(tiny_model.backbone.blocks):
        h = block(h)
        if i in gains:
            h = F.relu(h * gains[i])
    manual = tiny_model.heads(tiny_model.backbone.embed(h))
    torch.testing.assert_close(two["valence"], manual["valence"])
    # a third pass is modulated from pass 1 too, so it equals pass 2
    three = tiny_model(x, forward_passes=3, return_list=True)
    assert len(three) == 3
    torch.testing.assert_close(three[2]["arousal"], two["arousal"])


def test_zero_modulation_makes_two_passes_equal_one(tiny_model):
    with torch.no_grad():
        for group in tiny_model.lrm.values():
            for block in group.values():
                block.modulation.weight.zero_()
                block.modulation.bias.zero_()
    x = features()
    one, two = tiny_model(x, forward_passes=2, return_list=True)
    assert torch.equal(one["valence"], two["valence"]) and torch.equal(one["arousal"], two["arousal"])


def test_an_error_mid_pass_leaves_no_hooks_and_a_working_model(tiny_model):
    def boom(*_):
        raise RuntimeError("boom")

    handle = tiny_model.affective_valence[4].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        tiny_model(features(), forward_passes=2)
    handle.remove()
    x = features()  # no hook left behind: the plain forward is the plain CNN6 again
    torch.testing.assert_close(tiny_model(x, forward_passes=1)["embedding"], _plain_cnn6(tiny_model, x))


def _own_gains(model, x):
    return model.gains_from(model.modulations(model.feedforward(x)))


@torch.inference_mode()
def test_a_pass_resumed_at_any_block_equals_the_whole_pass(tiny_model):
    x = features()
    gains = _own_gains(tiny_model, x)
    whole = tiny_model.single_pass(x, gains)
    for k in range(4):
        raw = tiny_model.single_pass(x, gains, stop_at_block=k)
        resumed = tiny_model.single_pass(raw, gains, start_at_block=k)
        assert all(torch.equal(resumed[key], whole[key]) for key in whole)
    assert torch.equal(tiny_model.single_pass(x, gains, stop_at="embedding"), whole["embedding"])
    assert torch.equal(tiny_model(x)["valence"], whole["valence"])


@torch.inference_mode()
def test_a_stopped_pass_returns_the_raw_output_before_the_gain(tiny_model):
    x = features()
    gains = _own_gains(tiny_model, x)
    # Block 1's input does not depend on feedback, so its raw output is the same with and without gains.
    assert torch.equal(tiny_model.single_pass(x, gains, stop_at_block=0), tiny_model.single_pass(x, stop_at_block=0))
    with_gains = tiny_model.single_pass(x, gains, stop_at_block=1)
    assert not torch.allclose(with_gains, tiny_model.single_pass(x, stop_at_block=1))
    assert with_gains.min() >= 0


@torch.inference_mode()
def test_pooled_last_block_shortcut_equals_the_full_map(tiny_model):
    x = features()
    raw = tiny_model.single_pass(x, _own_gains(tiny_model, x), stop_at_block=3)
    gain = torch.randn(3, 16, 1, 1, generator=torch.Generator().manual_seed(4))  # negative entries too
    assert tiny_model.pooled_shortcut
    pooled = tiny_model.single_pass(raw, start_at_block=3, stop_at="pooled")
    short = tiny_model.heads_from_pooled(pooled, gain)
    full = tiny_model.single_pass(raw, {3: gain}, start_at_block=3)
    for key in ("valence", "arousal", "embedding"):
        torch.testing.assert_close(short[key], full[key], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("start, stop", [(None, 4), (2, 2), (2, 1)])
def test_a_stop_block_outside_the_pass_is_refused(tiny_model, start, stop):
    x = features() if start is None else torch.zeros(3, 8, 4, 4)
    with pytest.raises(ValueError, match="stop_at_block"):
        tiny_model.single_pass(x, start_at_block=start, stop_at_block=stop)


def test_no_state_leaks_between_calls(tiny_model):
    a, b = features(seed=1), features(seed=2)
    alone = tiny_model(b)["valence"]
    tiny_model(a)
    assert torch.equal(tiny_model(b)["valence"], alone)
    both = tiny_model(torch.cat([a, b]))["valence"][3:]
    torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-5)


def test_eval_mode_is_deterministic(tiny_model):
    x = features()
    assert torch.equal(tiny_model(x)["valence"], tiny_model(x)["valence"])


def test_config_built_model_round_trips_through_reference_layout(tmp_path):
    arch = ArchConf(
        channels=[8, 8, 16, 16], embedding_size=24, connections=[["valence", "conv4"], ["arousal", "conv1"]]
    )
    cfg = ModelConfig.from_arch(arch)
    model = LRMEmotionNet(cfg).eval()
    state = reference_state_dict(model)
    assert state["visual_system.base.logmel_extractor.melW"].shape == (513, 64)
    path = save_checkpoint(model, tmp_path / "m.pth", iteration=3)
    loaded = load_model(path)
    assert loaded.config.channels == (8, 8, 16, 16)
    assert set(loaded.connections) == {Connection("valence", "conv4"), Connection("arousal", "conv1")}
    x = features()
    torch.testing.assert_close(loaded(x)["valence"], model(x)["valence"])


def test_panns_backbone_weights_load(tmp_path, tiny_model, reference_state):
    ref = reference_state()
    prefix = "visual_system.base."
    panns = {k.removeprefix(prefix): v for k, v in ref.items() if k.startswith(prefix)}
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    torch.save({"model": panns}, path)
    model = LRMEmotionNet(tiny_model.config).eval()
    load_backbone(model, path)
    x = features()
    # tiny_model's weights are channels-last (load_model), so convolutions round differently.
    torch.testing.assert_close(model.backbone(x), tiny_model.backbone(x), rtol=1e-5, atol=1e-5)


def test_training_mode_spec_augment_handles_short_inputs(tiny_model):
    tiny_model.train()
    out = tiny_model(features(b=2, t=16), forward_passes=2)
    assert out["valence"].shape == (2, 1)
    out["valence"].sum().backward()
    grads = [p.grad for n, p in tiny_model.named_parameters() if n.startswith("lrm.")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # feedback weights get a gradient
