"""The feature file as an MLflow dataset input, so that the runs list's Dataset column names it."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

#: MLflow's limit on a dataset digest.
MAX_DIGEST = 36


def feature_dataset(path: str | Path, data_hash: str) -> MetaDataset:
    """A metadata-only dataset: the HDF5 file's path as its source, its content hash as its digest."""
    path = Path(path).resolve()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": MLflow's "" and "file" schemes
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(path))
    return MetaDataset(source, name=path.name, digest=data_hash[:MAX_DIGEST])


def log_feature_input(path: str | Path, data_hash: str, context: str = "eval", **tags: str) -> None:
    """Log the feature file as an input of the active run (context e.g. ``eval``; tags e.g. the split)."""
    mlflow.log_input(feature_dataset(path, data_hash), context=context, tags={k: str(v) for k, v in tags.items()})
