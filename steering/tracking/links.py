"""How a person opens a run in the MLflow UI: the store that keeps it and the run's URL path."""

from __future__ import annotations

from pathlib import Path

from steering.tracking.runs import sweep_parent


def store_uri(tracking_uri: str, sweep_dir: str | Path | None = None) -> str:
    """The store that keeps a job's run: in a sweep with a temporary server, its backend store, not the server."""
    parent = sweep_parent(sweep_dir)
    return str(parent.get("backend_uri") or parent["tracking_uri"]) if parent else str(tracking_uri)


#: MLflow 3 opens an experiment in its GenAI layout unless the URL asks for the "Model training" one.
VIEW = "workflowType=machine_learning"


def run_path(experiment_id: str, run_id: str | None = None) -> str:
    """The UI's URL path (after the host) of an experiment's runs or of one run, in the "Model training" view."""
    path = f"#/experiments/{experiment_id}/runs"
    return f"{path}/{run_id}?{VIEW}" if run_id else f"{path}?{VIEW}"


def how_to_open(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """One or two lines: the command that serves the store (unless it is a server) and where the run is."""
    path = run_path(experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}/{path}"
    return f"open with: mlflow ui --backend-store-uri {uri}\n  then http://127.0.0.1:5000/{path}"
