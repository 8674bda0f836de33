"""``resume=true`` after a crash: RUNNING runs whose process is gone are marked FAILED, so they are re-run
(and no run stays RUNNING forever)."""

from __future__ import annotations

import logging
import os
import socket

from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

DEAD_TAG = "ended_by"


def host_alive(pid: str | int | None, host: str | None) -> bool | None:
    """Whether a process of this host still runs (None when it lives elsewhere or is unknown)."""
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _fail_dead(client: MlflowClient, runs) -> int:
    ended = 0
    for run in runs:
        tags = run.data.tags
        if host_alive(tags.get("process_id"), tags.get("process_host")) is False:
            client.set_tag(run.info.run_id, DEAD_TAG, "resume: its process had died")
            client.set_terminated(run.info.run_id, "FAILED")
            log.warning(
                "resume: run %s (%s) was RUNNING but its process is gone: marked FAILED",
                run.info.run_id,
                run.info.run_name,
            )
            ended += 1
    return ended


def fail_dead_runs(uri: str, experiment: str, config_digest: str) -> int:
    """Mark RUNNING runs of this configuration whose process died as FAILED; returns how many."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    query = f"tags.config_hash = '{config_digest}' and attributes.status = 'RUNNING'"
    return _fail_dead(client, client.search_runs([exp.experiment_id], query, max_results=100))


def fail_dead_sweeps(client: MlflowClient, experiment_id: str) -> int:
    """Mark RUNNING sweep parents (and their RUNNING children) of dead processes as FAILED."""
    query = "tags.sweep_role = 'parent' and attributes.status = 'RUNNING'"
    parents = client.search_runs([experiment_id], query, max_results=200)
    ended = 0
    for parent in parents:
        if host_alive(parent.data.tags.get("process_id"), parent.data.tags.get("process_host")) is False:
            children = client.search_runs(
                [experiment_id],
                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'RUNNING'",
                max_results=1000,
            )
            ended += _fail_dead(client, children)
            ended += _fail_dead(client, [parent])
    return ended
