"""Another backbone behind the Backbone interface: built by name, saved, loaded and steered."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from steering import load_model
from steering.engine import SteeringSpec, select_connections, shared_pass, steer_direct, steer_from_shared
from steering.model import LRMEmotionNet, ModelConfig, save_checkpoint
from steering.model import backbone as backbone_registry
from steering.model.backbone import Backbone


class StridedTanh(nn.Module):
    """A toy backbone unlike Cnn6: strided 3x3 convs with tanh (outputs can be negative), mean pooling."""

    gain_commutes_with_pool = False

    def __init__(self, channels, embedding_size, mel_bins) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        widths = (1, *self.channels)
        self.stages = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(4))
        self.out = nn.Linear(self.channels[-1], embedding_size)

    @property
    def blocks(self):
        return list(self.stages)

    def stem(self, features):
        return features.unsqueeze(1) / 10

    def after_block(self, x):
        return torch.tanh(x)

    def pool(self, x):
        return x.mean(dim=(2, 3))

    def project(self, pooled):
        return F.relu(self.out(pooled))

    @classmethod
    def sizes_from_state(cls, state):
        return {
            "channels": tuple(int(state[f"stages.{i}.weight"].shape[0]) for i in range(4)),
            "embedding_size": int(state["out.weight"].shape[0]),
            "mel_bins": 64,
        }


@pytest.fixture
def toy_model(monkeypatch):
    registry = MappingProxyType({**backbone_registry.BACKBONES, "strided": StridedTanh})
    monkeypatch.setattr(backbone_registry, "BACKBONES", registry)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="strided", channels=(4, 6, 8, 8), embedding_size=10)
    model = LRMEmotionNet(cfg).eval()
    with torch.no_grad():  # ModBlocks start near zero; make the feedback matter
        for p in model.lrm.parameters():
            p.mul_(5)
    return model


def _inputs(batch=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 32, 64, generator=g)
    return x, {p: torch.rand(batch, 128, generator=g) for p in ("valence", "arousal")}


def test_the_toy_satisfies_the_interface_and_cnn6_too(toy_model, tiny_model):
    assert isinstance(toy_model.backbone, Backbone) and isinstance(tiny_model.backbone, Backbone)
    one, two = toy_model(_inputs()[0], return_list=True)
    assert two["valence"].shape == (4, 1)
    assert (one["valence"] - two["valence"]).abs().max() > 1e-4  # the feedback reaches the toy's blocks


def test_an_unknown_backbone_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'.*cnn6"):
        LRMEmotionNet(ModelConfig(backbone="nope"))


def test_another_backbone_round_trips_through_a_checkpoint(toy_model, tmp_path):
    path = save_checkpoint(toy_model, tmp_path / "toy.pth")
    loaded = load_model(path)
    assert loaded.config == toy_model.config
    x = _inputs()[0]
    torch.testing.assert_close(loaded(x)["arousal"], toy_model(x)["arousal"])


@pytest.mark.parametrize("pathway, layer", [("arousal", "conv1"), ("valence", "conv4"), ("dual", "all")])
def test_shared_work_equals_whole_passes_on_another_backbone(toy_model, pathway, layer):
    x, sig = _inputs()
    mask = torch.tensor([True, False, True, True])
    strengths = torch.tensor([0.0, 1.5])
    conns = select_connections(toy_model.connections, pathway, layer)
    spec = SteeringSpec(conns, method="bypass")
    shared = shared_pass(toy_model, x, spec.first_block)
    assert not shared.pooled  # the toy's pool does not commute with the gain: the map is kept
    fast = steer_from_shared(toy_model, shared, spec, sig, mask, strengths)
    for i, s in enumerate(strengths.tolist()):
        slow = steer_direct(toy_model, x, SteeringSpec(conns, method="bypass", strength=s), sig, mask)
        for t in ("valence", "arousal"):
            torch.testing.assert_close(fast[t][i], slow[t], rtol=1e-5, atol=1e-6)
