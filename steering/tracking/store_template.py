"""A fresh SQLite MLflow store copied from an empty, already migrated template instead of migrated anew.

MLflow builds a new SQLite store by running every alembic migration (about 6 s, most of a sweep's
fixed cost). The schema only depends on the MLflow version and its latest migration, so the first
store of a version is migrated once into ``<cache.dir>/mlflow_store/<version>-<revision>.db`` (under
a file lock, renamed into place when complete) and every later new store starts as a copy of it.
The template holds the tables and the schema version only: MLflow itself still adds the default
experiment (with this store's artifact location) when it first opens the copy, as it would have.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from filelock import FileLock

from steering.util.files import atomic_path

log = logging.getLogger(__name__)

TEMPLATE_DIR = "mlflow_store"


def template_name() -> str:
    """``<mlflow version>-<latest alembic revision>.db``: a template is only valid for this pair."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{mlflow.__version__}-{_get_latest_schema_revision()}") + ".db"


def _build(template: Path) -> None:
    """Create and migrate an empty store at ``template`` (atomically: a reader never sees half of it)."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    with atomic_path(template) as tmp:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()


def template_store(cache_dir: str | Path) -> Path:
    """The migrated empty store for this MLflow version under ``cache_dir`` (built on first use)."""
    template = Path(cache_dir) / TEMPLATE_DIR / template_name()
    if not template.is_file():
        template.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(template.with_name(template.name + ".lock")):
            if not template.is_file():
                log.info("migrating an empty MLflow store once for this MLflow version: %s", template)
                _build(template)
    return template


def seed_sqlite_store(path: Path, cache_dir: str | Path | None) -> bool:
    """Start a SQLite store that does not exist yet as a copy of the template; returns whether it did.

    The caller holds the store's lock. Without a cache directory, or when the template cannot be
    made (read-only cache, unexpected MLflow internals), MLflow creates the store as before.
    """
    if cache_dir is None or path.exists():
        return False
    try:
        template = template_store(cache_dir)
    except Exception as exc:  # only a speed-up: MLflow's own creation is always correct
        log.debug("no MLflow store template (%s); MLflow migrates the new store itself", exc)
        return False
    with atomic_path(path) as tmp:
        shutil.copyfile(template, tmp)
    return True
