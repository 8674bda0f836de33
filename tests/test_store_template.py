"""A new SQLite store made from the migrated template is the store MLflow would have made itself."""

from __future__ import annotations

import contextlib
import sqlite3

import mlflow

from steering.tracking.runs import configure


def _schema_and_rows(path) -> dict:
    """Every table's columns (constraint order aside, which alembic's batch copies do not fix) and rows,
    with times and the store's own folder left out."""
    with contextlib.closing(sqlite3.connect(path)) as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        found = {}
        for table in tables:
            columns = [(c[1], c[2], c[3], c[5]) for c in con.execute(f"PRAGMA table_info('{table}')")]
            rows = con.execute(f"SELECT * FROM '{table}'").fetchall()
            found[table] = (columns, rows)
    experiments = found.pop("experiments")[1]
    found["experiments"] = sorted((e[0], e[1], e[2].rsplit("/mlruns/", 1)[-1], e[3]) for e in experiments)
    return found


def test_a_store_from_the_template_equals_a_store_mlflow_migrates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    own = tmp_path / "own.db"
    configure(f"sqlite:///{own}", "exp")  # MLflow migrates it itself
    first = tmp_path / "first.db"
    configure(f"sqlite:///{first}", "exp", cache)  # builds the template, then copies it
    assert list((cache / "mlflow_store").glob("*.db"))
    second = tmp_path / "second.db"
    configure(f"sqlite:///{second}", "exp", cache)  # the template as it is
    expected = _schema_and_rows(own)
    assert _schema_and_rows(first) == expected
    assert _schema_and_rows(second) == expected


def test_an_existing_store_is_never_replaced_by_the_template(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    configure(store, "exp", tmp_path / "cache")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    configure(store, "exp", tmp_path / "cache")
    assert mlflow.get_run(run.info.run_id).data.metrics == {"m": 1.0}
