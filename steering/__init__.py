"""steering: steer an audio emotion model through its long-range modulatory feedback.

The model API (``steering.load_model`` ...) is imported on first use, so the command-line apps
compose their configs, answer ``--help`` and complete on Tab without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Connection", "LRMEmotionNet", "ModelConfig", "build_model", "load_model", "save_checkpoint"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("steering.model"), name)
    raise AttributeError(f"module 'steering' has no attribute {name!r}")
