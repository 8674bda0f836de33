"""Feature files, splits and emotion categories (binning).

Names are imported on first use, so an app's ``--help`` that only needs the binning does not load
h5py or torch.
"""

from __future__ import annotations

from steering.util.lazy import lazy_attributes

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

__getattr__ = lazy_attributes(__name__, _WHERE)
