"""The LRM emotion model: Cnn6 backbone, valence/arousal heads and feedback (reference-model.md §1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from steering.config.schema import ArchConf
from steering.model.cnn6 import DEFAULT_CHANNELS, Cnn6, VisualSystem
from steering.model.lrm import DEFAULT_CONNECTIONS, PATHWAYS, Connection, ModBlock, apply_gain

Output = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an LRM emotion model; the defaults are the reference model."""

    channels: tuple[int, ...] = DEFAULT_CHANNELS
    embedding_size: int = 512
    head_hidden: int = 256
    source_dim: int = 128
    mel_bins: int = 64
    connections: tuple[Connection, ...] = field(default=DEFAULT_CONNECTIONS)

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
        )

    def to_dict(self) -> dict:
        return {
            "channels": list(self.channels),
            "embedding_size": self.embedding_size,
            "head_hidden": self.head_hidden,
            "source_dim": self.source_dim,
            "mel_bins": self.mel_bins,
            "connections": [[c.pathway, c.layer] for c in self.connections],
        }


def _head(embedding_size: int, hidden: int, source_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(embedding_size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, source_dim),
        nn.ReLU(),
        nn.Linear(source_dim, 1),
    )


class LRMEmotionNet(nn.Module):
    """Predicts valence and arousal; head activations feed back into the conv blocks.

    Pass 1 is feed-forward. Every later pass runs the whole network again with each connection
    modulating its target block from the *pass-1* 128-d activation of its source pathway. The
    feedback is applied by forward hooks that exist only for the duration of a modulated pass,
    so nothing of one call survives into the next.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        self.visual_system = VisualSystem(Cnn6(cfg.channels, cfg.embedding_size, cfg.mel_bins))
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
    def backbone(self) -> Cnn6:
        return self.visual_system.base

    @property
    def connections(self) -> tuple[Connection, ...]:
        return self.config.connections

    def modblock(self, conn: Connection) -> ModBlock:
        try:
            return self.lrm[f"{conn.target_key}_modulation"][conn.block_name]
        except KeyError:
            raise KeyError(f"the model has no connection {conn}; it has {[str(c) for c in self.connections]}") from None

    def target_block(self, layer_index: int) -> nn.Module:
        return self.backbone.blocks[layer_index]

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

    @contextlib.contextmanager
    def feedback_hooks(self, gains: Mapping[int, torch.Tensor]) -> Iterator[None]:
        """Register gain hooks on the target blocks for the duration of the block; always removed."""
        handles = []
        try:
            for idx, gain in gains.items():

                def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor, g=gain) -> torch.Tensor:
                    return apply_gain(out, g)

                handles.append(self.target_block(idx).register_forward_hook(hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def feedforward(self, features: torch.Tensor, gains: Mapping[int, torch.Tensor] | None = None) -> Output:
        """One pass; ``gains`` ({block index: gain}) modulate block outputs when given."""
        with self.feedback_hooks(gains or {}):
            return self.heads(self.backbone(features))

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
