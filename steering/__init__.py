"""steering: steer an audio emotion model through its long-range modulatory feedback."""

from steering.model import Connection, LRMEmotionNet, ModelConfig, build_model, load_model, save_checkpoint

__all__ = ["Connection", "LRMEmotionNet", "ModelConfig", "build_model", "load_model", "save_checkpoint"]
__version__ = "0.1.0"
