"""The LRM emotion model."""

from steering.model.checkpoint import CheckpointError, load_backbone, load_model, save_checkpoint
from steering.model.lrm import DEFAULT_CONNECTIONS, LAYERS, PATHWAYS, Connection, ModBlock
from steering.model.network import LRMEmotionNet, ModelConfig, build_model

__all__ = [
    "DEFAULT_CONNECTIONS",
    "LAYERS",
    "PATHWAYS",
    "CheckpointError",
    "Connection",
    "LRMEmotionNet",
    "ModBlock",
    "ModelConfig",
    "build_model",
    "load_backbone",
    "load_model",
    "save_checkpoint",
]
