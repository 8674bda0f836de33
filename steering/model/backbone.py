"""What the LRM model needs of a backbone, and the registry that maps ``model.arch.backbone`` to a class.

The model's one forward path (:meth:`LRMEmotionNet.single_pass`) walks a backbone through the
pieces named here, so a new backbone is one class with these members plus one entry in
:data:`BACKBONES`; see docs/model.md and docs/extending.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from steering.model.cnn6 import Cnn6

DEFAULT_BACKBONE = "cnn6"


@runtime_checkable
class Backbone(Protocol):
    """A feature extractor the LRM heads sit on; built as ``cls(channels, embedding_size, mel_bins)``.

    The model lives at ``visual_system.base``: the backbone's own module names are its checkpoint keys.
    """

    #: True when every block output is >= 0 and ``pool`` commutes with a non-negative per-channel
    #: factor. Then steering the last block needs only the pooled (B, C) vector (see docs/model.md).
    gain_commutes_with_pool: ClassVar[bool]
    channels: tuple[int, ...]

    @property
    def blocks(self) -> Sequence[nn.Module]:
        """The blocks whose outputs feedback may scale, in order (connection layer convN = block N-1)."""
        ...

    def stem(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, mel) features -> the input of the first block."""
        ...

    def after_block(self, x: torch.Tensor) -> torch.Tensor:
        """What follows a block's (modulated) output on the way to the next block, e.g. dropout."""
        ...

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Last block output -> (B, C)."""
        ...

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, embedding_size), the input of both heads."""
        ...

    @classmethod
    def sizes_from_state(cls, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """``channels``, ``embedding_size`` and ``mel_bins`` read from the backbone's own state_dict keys.

        Raises ``KeyError`` with the missing (backbone-relative) key.
        """
        ...


#: Read-only name -> class map; add a backbone by adding its line here.
BACKBONES: Mapping[str, type[nn.Module]] = MappingProxyType({"cnn6": Cnn6})


def backbone_class(name: str) -> type[nn.Module]:
    """The registered class called ``name``; the error lists the registered names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}") from None


def build_backbone(name: str, channels: Sequence[int], embedding_size: int, mel_bins: int) -> nn.Module:
    """An untrained backbone of the registered class ``name``."""
    return backbone_class(name)(channels, embedding_size, mel_bins)
