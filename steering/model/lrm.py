"""Long-range modulatory (LRM) feedback: connections and ModBlocks (docs/model.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from steering.vocab import LAYERS, PATHWAYS

NORM_EPS = 1e-5
#: The stages a :class:`ModBlock` records in ``trace``, in order (see :meth:`ModBlock.forward`).
TRACE_STAGES = ("raw", "normalized", "squashed", "conv", "gained", "m")


@dataclass(frozen=True, order=True)
class Connection:
    """One feedback connection: a pathway's 128-d activation modulating one conv block."""

    pathway: str  # "valence" | "arousal"
    layer: str  # "conv1" .. "conv4"

    def __post_init__(self) -> None:
        if self.pathway not in PATHWAYS:
            raise ValueError(f"unknown pathway {self.pathway!r}; expected one of {PATHWAYS}")
        if self.layer not in LAYERS:
            raise ValueError(f"unknown layer {self.layer!r}; expected one of {LAYERS}")

    @property
    def block_index(self) -> int:
        """0-based index of the target conv block."""
        return LAYERS.index(self.layer)

    @property
    def source_name(self) -> str:
        return f"affective_{self.pathway}_128d"

    @property
    def target_module(self) -> str:
        return f"visual_system.base.conv_block{self.block_index + 1}"

    @property
    def target_key(self) -> str:
        return self.target_module.replace(".", "_")

    @property
    def block_name(self) -> str:
        return f"from_{self.source_name}_to_{self.target_key}"

    @property
    def state_prefix(self) -> str:
        """Prefix of this connection's ModBlock in a (nested layout) state_dict."""
        return f"lrm.{self.target_key}_modulation.{self.block_name}."

    def __str__(self) -> str:
        return f"{self.pathway}->{self.layer}"

    @classmethod
    def parse(cls, spec: str | Iterable[str]) -> Connection:
        """Accept ``"valence->conv4"``, ``["valence", "conv4"]`` or reference names."""
        if isinstance(spec, str):
            if "->" in spec:
                pathway, layer = (s.strip() for s in spec.split("->"))
                return cls(pathway, layer)
            raise ValueError(f"cannot parse connection {spec!r}; use 'pathway->layer'")
        source, target = list(spec)
        pathway = source.removeprefix("affective_").removesuffix("_128d")
        if target.startswith("visual_system.base.conv_block"):
            target = "conv" + target.removeprefix("visual_system.base.conv_block")
        return cls(pathway, target)


DEFAULT_CONNECTIONS: tuple[Connection, ...] = (
    Connection("valence", "conv4"),
    Connection("valence", "conv3"),
    Connection("arousal", "conv2"),
    Connection("arousal", "conv1"),
)


class Resize(nn.Module):
    """The 1x1 conv applied after bilinear resizing (path ``rescale.resize.conv1x1``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)


class Rescale(nn.Module):
    """Normalise, squash, resize. Only the resize has weights."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.resize = Resize(channels)


def normalize_per_sample(v: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (population) variance over all elements of each sample, no affine."""
    flat = v.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + NORM_EPS)).view_as(v)


class ModBlock(nn.Module):
    """Maps a (B, 128) source vector to a modulation m of shape (B, C, 1, 1).

    The reference resizes the 1x1 map bilinearly (align_corners=True) to the target's (H, W)
    before the 1x1 convs. From a 1x1 input that resize is a constant map, and every later step is
    per-position, so m is spatially constant: computing it at 1x1 and broadcasting is the same
    result for a fraction of the work (conv1's map alone has 16,000 positions).
    """

    def __init__(self, source_dim: int, target_channels: int) -> None:
        super().__init__()
        self.rescale = Rescale(source_dim)
        self.neg_scale = nn.Parameter(torch.ones(1))
        self.pos_scale = nn.Parameter(torch.ones(1))
        self.modulation = nn.Conv2d(source_dim, target_channels, kernel_size=1, bias=True)

    def forward(
        self,
        source: torch.Tensor,
        *,
        normalize: bool = True,
        squash: bool = True,
        gain_multiplier: float | torch.Tensor = 1.0,
        trace: dict[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Modulation for ``source`` (B, 128) -> (B, C, 1, 1).

        ``normalize``/``squash`` switch steps 1-2 off (the ``bypass`` method); ``gain_multiplier``
        scales both learned gains (the ``modulation`` method). A tensor multiplier of shape (B,)
        gives each sample its own factor. ``trace``, when given, receives the signal at every
        stage of :data:`TRACE_STAGES` (B, width): the input, after normalisation, after tanh,
        after the 1x1 conv, after the gains and m; a stage switched off is recorded as None
        (the intervention ledger, docs/model.md).
        """
        x = source.reshape(source.shape[0], -1)
        if trace is not None:
            trace["raw"] = x
        if normalize:
            x = normalize_per_sample(x)
        if trace is not None:
            trace["normalized"] = x if normalize else None
        if squash:
            x = torch.tanh(x)
        if trace is not None:
            trace["squashed"] = x if squash else None
        # 1x1 convolutions of a 1x1 map are matrix products: F.linear is the same arithmetic, faster.
        conv = self.rescale.resize.conv1x1
        x = F.linear(x, conv.weight.flatten(1))
        if trace is not None:
            trace["conv"] = x
        neg, pos = self.neg_scale, self.pos_scale
        if isinstance(gain_multiplier, torch.Tensor) and gain_multiplier.dim() > 0:
            gain_multiplier = gain_multiplier.reshape(-1, 1)
        x = torch.where(x < 0, x * (neg * gain_multiplier), x * (pos * gain_multiplier))
        m = F.linear(x, self.modulation.weight.flatten(1), self.modulation.bias)
        if trace is not None:
            trace["gained"], trace["m"] = x, m
        return m[:, :, None, None]


def apply_gain(output: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Feedback on a block's output: ReLU(out * (1 + sum m)); ``gain`` is the (1 + sum m) factor."""
    return F.relu(output * gain)
