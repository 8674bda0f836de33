"""The LRM emotion model: a backbone, valence/arousal heads and feedback (docs/model.md).

The model owns its one forward path, :meth:`LRMEmotionNet.single_pass`, which can start at a
block, scale block outputs by given gains and stop where asked; the full passes, the steering
engine and signal extraction all run through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from steering.config.schema import ArchConf
from steering.model.backbone import DEFAULT_BACKBONE, build_backbone
from steering.model.cnn6 import DEFAULT_CHANNELS, VisualSystem
from steering.model.lrm import DEFAULT_CONNECTIONS, PATHWAYS, Connection, ModBlock, apply_gain

Output = dict[str, torch.Tensor]
Gains = Mapping[int, torch.Tensor]
StopAt = Literal["heads", "embedding", "pooled"]
#: What a pass records when asked: {block index: output after its gain and ReLU, "embedding": (B, E)}.
Taps = dict[int | str, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an LRM emotion model; the defaults are the reference model."""

    channels: tuple[int, ...] = DEFAULT_CHANNELS
    embedding_size: int = 512
    head_hidden: int = 256
    source_dim: int = 128
    mel_bins: int = 64
    connections: tuple[Connection, ...] = field(default=DEFAULT_CONNECTIONS)
    backbone: str = DEFAULT_BACKBONE

    @classmethod
    def from_arch(cls, arch: ArchConf) -> ModelConfig:
        """The model described by a config's ``model.arch`` (connections as [pathway, layer] pairs)."""
        return cls(
            channels=tuple(int(c) for c in arch.channels),
            embedding_size=int(arch.embedding_size),
            head_hidden=int(arch.head_hidden),
            source_dim=int(arch.source_dim),
            mel_bins=int(arch.mel_bins),
            connections=tuple(Connection.parse(c) for c in arch.connections),
            backbone=str(arch.backbone or DEFAULT_BACKBONE),
        )

    def to_dict(self) -> dict:
        """Plain form (demo cache key, checkpoint metadata); ``backbone`` only when it is not the default,
        so keys and files made before backbones were selectable stay the same."""
        out = {
            "channels": list(self.channels),
            "embedding_size": self.embedding_size,
            "head_hidden": self.head_hidden,
            "source_dim": self.source_dim,
            "mel_bins": self.mel_bins,
            "connections": [[c.pathway, c.layer] for c in self.connections],
        }
        if self.backbone != DEFAULT_BACKBONE:
            out["backbone"] = self.backbone
        return out


def _head(embedding_size: int, hidden: int, source_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(embedding_size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, source_dim),
        nn.ReLU(),
        nn.Linear(source_dim, 1),
    )


class LRMEmotionNet(nn.Module):
    """Predicts valence and arousal; head activations feed back into the backbone's blocks.

    Pass 1 is feed-forward. Every later pass runs the whole network again with each connection
    modulating its target block from the *pass-1* 128-d activation of its source pathway. The
    feedback is a ``gains`` argument of :meth:`single_pass`, not state on the modules, so nothing
    of one call survives into the next.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        self.visual_system = VisualSystem(build_backbone(cfg.backbone, cfg.channels, cfg.embedding_size, cfg.mel_bins))
        self.affective_valence = _head(cfg.embedding_size, cfg.head_hidden, cfg.source_dim)
        self.affective_arousal = _head(cfg.embedding_size, cfg.head_hidden, cfg.source_dim)
        self.lrm = nn.ModuleDict()
        for conn in cfg.connections:
            group_key = f"{conn.target_key}_modulation"
            if group_key not in self.lrm:
                self.lrm[group_key] = nn.ModuleDict()
            self.lrm[group_key][conn.block_name] = ModBlock(cfg.source_dim, cfg.channels[conn.block_index])

    # ----------------------------------------------------------------- structure
    @property
    def backbone(self) -> nn.Module:
        """The backbone (a :class:`steering.model.backbone.Backbone`) at ``visual_system.base``."""
        return self.visual_system.base

    @property
    def connections(self) -> tuple[Connection, ...]:
        return self.config.connections

    @property
    def last_block(self) -> int:
        return len(self.backbone.blocks) - 1

    def modblock(self, conn: Connection) -> ModBlock:
        try:
            return self.lrm[f"{conn.target_key}_modulation"][conn.block_name]
        except KeyError:
            raise KeyError(f"the model has no connection {conn}; it has {[str(c) for c in self.connections]}") from None

    # ----------------------------------------------------------------- pieces
    def heads(self, embedding: torch.Tensor) -> Output:
        """Embedding -> predictions and the 128-d activations of both pathways."""
        out: Output = {"embedding": embedding}
        for pathway in PATHWAYS:
            head = getattr(self, f"affective_{pathway}")
            hidden = head[3](head[2](head[1](head[0](embedding))))
            out[f"{pathway}_128d"] = hidden
            out[pathway] = head[4](hidden)
        return out

    def modulations(
        self, sources: Mapping[str, torch.Tensor], connections: Sequence[Connection] | None = None
    ) -> dict[Connection, torch.Tensor]:
        """The model's own modulation m (B, C, 1, 1) of each connection from pathway activations."""
        conns = self.connections if connections is None else connections
        return {c: self.modblock(c)(sources[f"{c.pathway}_128d"]) for c in conns}

    @staticmethod
    def gains_from(modulations: Mapping[Connection, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Sum modulations per target block: {block index: 1 + sum m}."""
        gains: dict[int, torch.Tensor] = {}
        for conn, m in sorted(modulations.items()):
            idx = conn.block_index
            gains[idx] = gains.get(idx, 1.0) + m
        return gains

    # ----------------------------------------------------------------- the forward path
    def _leave_block(self, index: int, raw: torch.Tensor, gains: Gains, taps: Taps | None = None) -> torch.Tensor:
        """A block's raw output -> the next block's input: feedback gain (if any), then the backbone's step."""
        h = apply_gain(raw, gains[index]) if index in gains else raw
        if taps is not None:
            taps[index] = h
        return self.backbone.after_block(h)

    def single_pass(
        self,
        x: torch.Tensor,
        gains: Gains | None = None,
        *,
        start_at_block: int | None = None,
        stop_at_block: int | None = None,
        stop_at: StopAt = "heads",
        taps: Taps | None = None,
    ) -> Output | torch.Tensor:
        """One pass through the network, or the part of it that is asked for.

        ``x`` is (B, T, mel) features, or with ``start_at_block=k`` the raw (pre-gain) output of
        block k, from which the pass resumes (gain k, then block k+1 ...). ``gains`` ({block
        index: 1 + sum m}) scale block outputs: ReLU(out * gain). With ``stop_at_block=j`` the
        raw output of block j is returned; otherwise the pass ends at ``stop_at``: the pooled
        (B, C) last block, the (B, E) embedding, or the heads' dict (predictions, embedding, *_128d).
        ``taps`` (a dict), when given, receives each block's output after its gain and ReLU (the raw
        output where it has no gain) under the block index, and the embedding under ``"embedding"``.
        """
        backbone, gains = self.backbone, gains or {}
        if start_at_block is None:
            h, first = backbone.stem(x), 0  # (B, 1, T, mel)
        else:
            h, first = self._leave_block(start_at_block, x, gains, taps), start_at_block + 1
        if stop_at_block is not None and not first <= stop_at_block <= self.last_block:
            raise ValueError(
                f"stop_at_block {stop_at_block} is not a block after the start ({first}..{self.last_block})"
            )
        for index in range(first, self.last_block + 1):
            raw = backbone.blocks[index](h)  # (B, C_index, T / 2^(index+1), mel / 2^(index+1))
            if index == stop_at_block:
                return raw
            h = self._leave_block(index, raw, gains, taps)
        pooled = backbone.pool(h)  # (B, C_last)
        if stop_at == "pooled":
            return pooled
        embedding = backbone.project(pooled)  # (B, E)
        if taps is not None:
            taps["embedding"] = embedding
        return embedding if stop_at == "embedding" else self.heads(embedding)

    @property
    def pooled_shortcut(self) -> bool:
        """Whether :meth:`heads_from_pooled` is exact for this backbone (see its docstring)."""
        return bool(getattr(self.backbone, "gain_commutes_with_pool", False))

    def heads_from_pooled(self, pooled: torch.Tensor, gain: torch.Tensor) -> Output:
        """Finish a pass from ``pool(p)`` of the last block's raw output ``p`` and that block's gain.

        When block outputs are >= 0 and the gain is constant over the map, ReLU(p * g) =
        p * ReLU(g), and the pooling commutes with that non-negative per-channel factor:
        pool(ReLU(p * g)) = ReLU(g) * pool(p). So steering the last block needs only the (B, C)
        pool(p), not the map. Valid only when :attr:`pooled_shortcut` (and in eval mode).
        """
        return self.heads(self.backbone.project(torch.relu(gain.flatten(1)) * pooled))

    def feedforward(self, features: torch.Tensor, gains: Gains | None = None) -> Output:
        """One whole pass; ``gains`` ({block index: gain}) modulate block outputs when given."""
        return self.single_pass(features, gains)

    # ----------------------------------------------------------------- public
    def forward(
        self, features: torch.Tensor, forward_passes: int = 2, return_list: bool = False
    ) -> Output | list[Output]:
        """``features`` (B, T, mel) -> {valence (B,1), arousal (B,1), embedding (B,E), *_128d}."""
        if forward_passes < 1:
            raise ValueError(f"forward_passes must be >= 1, got {forward_passes}")
        first = self.feedforward(features)
        outputs = [first]
        if forward_passes > 1:
            gains = self.gains_from(self.modulations(first))
            for _ in range(forward_passes - 1):
                outputs.append(self.feedforward(features, gains))
        return outputs if return_list else outputs[-1]


def build_model(config: ModelConfig | ArchConf | None = None) -> LRMEmotionNet:
    """Build an LRM model from a ``ModelConfig`` or a config's ``model.arch``."""
    if config is None or isinstance(config, ModelConfig):
        return LRMEmotionNet(config)
    return LRMEmotionNet(ModelConfig.from_arch(config))
