"""The LRM emotion model: backbone interface and Cnn6, heads and feedback, checkpoint I/O (docs/model.md)."""

from steering.model.backbone import BACKBONES, Backbone
from steering.model.checkpoint import CheckpointError, load_backbone, load_model, save_checkpoint
from steering.model.lrm import DEFAULT_CONNECTIONS, LAYERS, PATHWAYS, Connection, ModBlock
from steering.model.network import LRMEmotionNet, ModelConfig, build_model

__all__ = [
    "BACKBONES",
    "DEFAULT_CONNECTIONS",
    "LAYERS",
    "PATHWAYS",
    "Backbone",
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
