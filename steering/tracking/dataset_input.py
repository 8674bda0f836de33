"""The feature file as an MLflow dataset input, so that the runs list's Dataset column names it."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException

#: MLflow's limit on a dataset digest.
MAX_DIGEST = 36


def feature_dataset(path: str | Path, data_hash: str) -> MetaDataset:
    """A metadata-only dataset: the HDF5 file's path as its source, its content hash as its digest."""
    path = Path(path).resolve()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": MLflow's "" and "file" schemes
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(path))
    return MetaDataset(source, name=path.name, digest=data_hash[:MAX_DIGEST])


#: Attempts at logging the input when parallel jobs of a sweep register the same dataset at once.
ATTEMPTS = 3
#: How the store reports that collision: SQLite, PostgreSQL.
DUPLICATE_KEY = ("UNIQUE constraint failed", "duplicate key value violates unique constraint")


def log_feature_input(path: str | Path, data_hash: str, context: str = "eval", **tags: str) -> None:
    """Log the feature file as an input of the active run (context e.g. ``eval``; tags e.g. the split).

    Parallel jobs of a sweep log the same dataset: the store looks it up, then inserts it, so two
    jobs that do so at the same moment collide on its unique key. The one that loses tries again
    and then finds the other's record.
    """
    dataset, tag_values = feature_dataset(path, data_hash), {k: str(v) for k, v in tags.items()}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            mlflow.log_input(dataset, context=context, tags=tag_values)
            return
        except MlflowException as exc:
            if attempt == ATTEMPTS or not any(phrase in str(exc) for phrase in DUPLICATE_KEY):
                raise
            time.sleep(0.2 * attempt)
