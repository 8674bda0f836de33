"""Params that describe the model a run loaded, not the architecture the config composed.

``model.arch`` is what the demo builds when no checkpoint is given. With ``model.checkpoint`` set,
the architecture comes from the file (``steering.model.checkpoint.infer_config``) and the composed
``model.arch`` (the demo's 8/16/32/64 unless ``model=reference`` was chosen) is ignored, so a run's
params must take ``model.arch.*`` from the loaded model. ``config.yaml`` and the config hash keep
the composed config, so ``resume=true`` and re-running a recorded config find the same runs.
"""

from __future__ import annotations

import dataclasses

from steering.config.schema import ArchConf, RunConfig
from steering.model.network import ModelConfig


def arch_conf(config: ModelConfig) -> ArchConf:
    """``model.arch`` of a model's architecture (the inverse of ``ModelConfig.from_arch``)."""
    return ArchConf(
        channels=[int(c) for c in config.channels],
        embedding_size=int(config.embedding_size),
        head_hidden=int(config.head_hidden),
        source_dim=int(config.source_dim),
        mel_bins=int(config.mel_bins),
        connections=[[c.pathway, c.layer] for c in config.connections],
        backbone=str(config.backbone),
    )


def described_config(cfg: RunConfig, model_config: ModelConfig) -> RunConfig:
    """``cfg`` with ``model.arch`` replaced by the architecture of the model actually loaded (for params)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch=arch_conf(model_config)))
