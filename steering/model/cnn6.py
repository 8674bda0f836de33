"""PANNs Cnn6 backbone operating on log-mel features (module path ``visual_system.base``).

It implements :class:`steering.model.backbone.Backbone`; docs/model.md describes the layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)


class ConvBlock5x5(nn.Module):
    """Conv 5x5 (no bias) -> BatchNorm -> ReLU -> 2x2 average pool.

    The module's output (after pooling, before dropout) is what feedback scales.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=1, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.avg_pool2d(x, kernel_size=2)


def _drop_stripes(x: torch.Tensor, dim: int, max_width: int, count: int) -> torch.Tensor:
    """Zero ``count`` random stripes of width < ``max_width`` along ``dim`` (per sample)."""
    size = x.shape[dim]
    out = x.clone()
    for b in range(x.shape[0]):
        for _ in range(count):
            width = int(torch.randint(0, min(max_width, size), (1,)))
            start = int(torch.randint(0, size - width, (1,)))
            out[b].narrow(dim - 1, start, width).zero_()
    return out


class Cnn6(nn.Module):
    """Cnn6 on (B, T, mel_bins) features; returns the (B, embedding) vector."""

    # Block outputs are ReLU then average pooling (>= 0), and ``pool`` is means and a max.
    gain_commutes_with_pool: ClassVar[bool] = True

    def __init__(
        self,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        embedding_size: int = 512,
        mel_bins: int = 64,
    ) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"Cnn6 needs 4 channel widths, got {list(channels)}")
        self.channels = tuple(int(c) for c in channels)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        widths = (1, *self.channels)
        for i in range(4):
            setattr(self, f"conv_block{i + 1}", ConvBlock5x5(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(self.channels[-1], embedding_size)

    @property
    def blocks(self) -> list[ConvBlock5x5]:
        return [self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4]

    def stem(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) or (B, 1, T, F) features -> (B, 1, T, F) after bn0 over the mel axis (+ SpecAugment)."""
        x = features.unsqueeze(1) if features.dim() == 3 else features
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.training:
            x = _drop_stripes(x, dim=2, max_width=64, count=2)
            x = _drop_stripes(x, dim=3, max_width=8, count=2)
        # Channels-last maps make the CPU (oneDNN) and GPU convolutions and pooling markedly faster.
        return x.contiguous(memory_format=torch.channels_last)

    def after_block(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout 0.2 after every block (after its feedback gain, when it has one)."""
        return F.dropout(x, p=0.2, training=self.training)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int = 4) -> torch.Tensor:
        """Run conv blocks ``start`` .. ``stop - 1`` (0-based) without feedback (the plain PANNs network)."""
        for block in self.blocks[start:stop]:
            x = self.after_block(block(x))
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Last block output (B, C, T', F') -> (B, embedding)."""
        return self.project(self.pool(x))

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """(B, C, T', F') -> (B, C): mean over frequency, then max + mean over time."""
        x = torch.mean(x, dim=3)
        return torch.amax(x, dim=2) + torch.mean(x, dim=2)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (B, C) -> (B, embedding)."""
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        return F.dropout(x, p=0.5, training=self.training)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The plain backbone (no feedback), e.g. for PANNs weights; the LRM model walks the pieces itself."""
        return self.embed(self.run_blocks(self.stem(features)))

    @classmethod
    def sizes_from_state(cls, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Channel widths, embedding size and mel bins from a Cnn6 state_dict (backbone-relative keys)."""
        return {
            "channels": tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, 5)),
            "embedding_size": int(state["fc1.weight"].shape[0]),
            "mel_bins": int(state["bn0.weight"].shape[0]),
        }


class VisualSystem(nn.Module):
    """Container that gives the backbone (Cnn6 or another) its reference path ``visual_system.base``."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.base(features)
