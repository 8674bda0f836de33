"""Feature files and splits."""

from steering.data.features import Batch, FeatureFile, FeatureFileError, file_hash, write_feature_file
from steering.data.splits import indices_hash, legacy_split, split_indices, threeway_split

__all__ = [
    "Batch",
    "FeatureFile",
    "FeatureFileError",
    "file_hash",
    "indices_hash",
    "legacy_split",
    "split_indices",
    "threeway_split",
    "write_feature_file",
]
