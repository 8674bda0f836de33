"""Feature files, splits and emotion categories (binning).

Names are imported on first use, so an app's ``--help`` that only needs the binning does not load
h5py or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Batch": "steering.data.features",
    "FeatureFile": "steering.data.features",
    "FeatureFileError": "steering.data.features",
    "file_hash": "steering.data.features",
    "same_feature_file": "steering.data.features",
    "write_feature_file": "steering.data.features",
    "indices_hash": "steering.data.splits",
    "legacy_split": "steering.data.splits",
    "split_indices": "steering.data.splits",
    "threeway_split": "steering.data.splits",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'steering.data' has no attribute {name!r}")
