"""``hydra/launcher=slurm``: Hydra's Submitit SLURM launcher, made to account for every job.

The launcher class lives in ``hydra_plugins/steering_slurm`` (Hydra accepts launchers only from that
package) and hands its work to :func:`launch` (in the submitting process) and :func:`before_job` (in
each job).

Hydra's own launcher collects results in job order through Submitit, so the first job without a result
(cancelled, over its time limit, out of memory) ends the sweep while the others still run, and without
SLURM job accounting such a job is never seen to end at all. This launcher instead

* checks the request against the partition's largest node (``sinfo``) before anything is submitted
  (:func:`check_request`), since a job that asks for more never leaves the queue;
* waits for every job, reading states with :class:`~steering.sweep.slurm_queue.QueueWatch` (squeue
  first, sacct only for jobs the controller forgot), so a job killed from outside ends the wait;
* turns a job that died without a result into a failed Hydra job return: the sweep's callbacks hear of
  it (``on_job_end``), so it becomes a FAILED child run with its SLURM state and reason, and the parent
  run gets tag ``sweep_failed_jobs`` saying how many jobs failed and why;
* cancels its queued and running jobs when the sweep is interrupted (Ctrl-C, SIGTERM);
* in a requeued job (time limit with ``max_num_timeout``), deletes the runs of the job's earlier
  attempts (MLflow keeps them in its trash), so each job is logged once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from steering.errors import SteeringError
from steering.sweep import slurm_queue as queue
from steering.sweep import table as tbl
from steering.tracking.runs import sweep_parent

log = logging.getLogger(__name__)

RESULT_GRACE_S = 10.0  # a job's result file may appear just after SLURM says it ended
MAX_POLL_S = 5.0


class SlurmRequestError(SteeringError):
    """The launcher asks for more than any node of the partition has."""


class SlurmJobDied(RuntimeError):
    """A SLURM job that ended without a result; the message gives its state, reason and log."""


def check_request(params: Mapping[str, Any]) -> None:
    """Raise :class:`SlurmRequestError` if no node of the partition fits one job's CPUs and memory."""
    partition = params.get("partition")
    nodes = queue.partition_nodes(partition)
    where = f"partition {partition}" if partition else "the default partition"
    if nodes is None:
        log.warning("sinfo does not answer: the SLURM request is not checked against %s", where)
        return
    if not nodes:
        raise SlurmRequestError(f"hydra.launcher.partition: {where} has no nodes (sinfo)")
    cpus = int(params.get("cpus_per_task") or 1) * int(params.get("tasks_per_node") or 1)
    mem_gb = params.get("mem_gb")
    problems = []
    if cpus > max(n.cpus for n in nodes):
        problems.append(
            f"needs {cpus} CPUs (hydra.launcher.cpus_per_task x tasks_per_node), "
            f"the largest node of {where} has {max(n.cpus for n in nodes)}"
        )
    if mem_gb and float(mem_gb) * 1024 > max(n.memory_mb for n in nodes):
        problems.append(
            f"needs {mem_gb} GB (hydra.launcher.mem_gb), the largest node of {where} has "
            f"{max(n.memory_mb for n in nodes) // 1024} GB"
        )
    if problems:
        raise SlurmRequestError("hydra/launcher=slurm " + "; ".join(problems))


def check_slurm_request(config: DictConfig) -> None:
    """:func:`check_request` for the sweep's config at its start."""
    keys = ("partition", "cpus_per_task", "tasks_per_node", "mem_gb")
    check_request({key: OmegaConf.select(config, f"hydra.launcher.{key}", default=None) for key in keys})


def before_job(launcher: Any, job_num: int) -> None:
    """In the job, before it runs: a requeued attempt retires the runs of the job's earlier attempts."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        _supersede_earlier_attempts(Path(str(launcher.config.hydra.sweep.dir)), job_num)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the jobs as one array, wait for every one, return each job's return (FAILED for dead jobs)."""
    check_request(launcher.params)
    executor = _executor(launcher)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*job_params))
    log.info("submitted SLURM job array %s (%d jobs)", jobs[0].job_id.split("_")[0], len(jobs))
    try:
        ended = wait_for(jobs, queue.QueueWatch())
    except BaseException:  # Ctrl-C or SIGTERM (raised as KeyboardInterrupt): leave nothing in the queue
        log.warning("sweep interrupted: cancelling its SLURM jobs")
        queue.cancel([job.job_id for job in jobs])
        raise
    returns = [
        _collect(launcher, job, ended[job.job_id], list(ov), idx)
        for idx, (job, ov) in enumerate(zip(jobs, job_overrides), start=initial_job_idx)
    ]
    _note_failures(sweep_dir, returns, initial_job_idx)
    return returns


def _executor(launcher: Any) -> Any:
    """Submitit's executor with the launcher's parameters (as Hydra's launcher builds it)."""
    import submitit

    params = launcher.params
    init = {"folder": params["submitit_folder"]}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params["max_num_timeout"]
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"max_num_timeout", "submitit_folder"}
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip})
    return executor


def _collect(launcher: Any, job: Any, state: queue.JobState | None, overrides: list[str], idx: int) -> JobReturn:
    """The job's own return, or a FAILED one for a job that died without a result."""
    if state is None:
        try:
            return job.results()[0]
        except Exception as exc:  # a result that is Submitit's error: e.g. timed out too many times
            line = _last_error_line(exc)
            state = queue.JobState("TIMEOUT" if "timed-out" in line else "FAILED", line)
    error = SlurmJobDied(f"SLURM job {job.job_id} {state.describe()}; its log: {job.paths.stderr}")
    log.error("job #%d: %s", idx, error)
    return _dead_job(launcher, overrides, idx, error)


def _dead_job(launcher: Any, overrides: list[str], idx: int, error: SlurmJobDied) -> JobReturn:
    """Tell the sweep's callbacks that job ``idx`` ended FAILED, as if it had reported so itself."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config.hydra.job):
        config.hydra.job.num = idx
    ret = JobReturn(overrides=overrides, cfg=config, status=JobStatus.FAILED)
    ret.return_value = error
    launcher.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
    _close_dead_run(Path(str(launcher.config.hydra.sweep.dir)), idx, str(error))
    return ret


def _last_error_line(exc: BaseException) -> str:
    """The exception line of a Submitit job error (its message wraps the job's traceback in dashes)."""
    parts = str(exc).split("-" * 22)
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else parts[0]).splitlines() if line.strip()]
    return lines[-1] if len(parts) > 2 and lines else (lines[0] if lines else type(exc).__name__)


def wait_for(jobs: Sequence[Any], watch: queue.QueueWatch) -> dict[str, queue.JobState | None]:
    """Wait until every job has a result (None) or ended without one (its last state)."""
    waiting = {job.job_id: job for job in jobs}
    ended: dict[str, queue.JobState | None] = {}
    gone_since: dict[str, float] = {}
    delay = 1.0
    while waiting:
        for job_id in [j for j, job in waiting.items() if job.paths.result_pickle.exists()]:
            ended[job_id] = None
            del waiting[job_id]
        if not waiting:
            break
        states = watch.states(list(waiting))
        now = time.monotonic()
        for job_id in list(waiting):
            state = states.get(job_id)
            if state is not None and not state.ended:
                gone_since.pop(job_id, None)
                watch.note_pending(job_id, state)
            elif now - gone_since.setdefault(job_id, now) > RESULT_GRACE_S:
                ended[job_id] = state or queue.GONE
                del waiting[job_id]
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL_S)
    return ended


def _job_runs(sweep_dir: Path, job_num: int, status: str | None = None) -> tuple[MlflowClient | None, list[Any]]:
    """This sweep's child runs of job ``job_num`` (optionally only those in ``status``)."""
    parent = sweep_parent(sweep_dir)
    if parent is None:
        return None, []
    client = MlflowClient(parent["tracking_uri"])
    query = f"tags.`mlflow.parentRunId` = '{parent['run_id']}' and tags.{tbl.TAG_JOB} = '{job_num}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return client, client.search_runs([parent["experiment_id"]], query, max_results=100)


def _close_dead_run(sweep_dir: Path, job_num: int, message: str) -> None:
    """A run the dead job left RUNNING ends FAILED with the reason (not KILLED as if the sweep ended it)."""
    try:
        client, runs = _job_runs(sweep_dir, job_num, "RUNNING")
        for run in runs:
            client.set_tag(run.info.run_id, "sweep_error", message[:1000])
            client.set_terminated(run.info.run_id, "FAILED")
    except Exception:  # bookkeeping must not stop the sweep from collecting the other jobs
        log.exception("could not close the run of dead job #%d", job_num)


def _supersede_earlier_attempts(sweep_dir: Path, job_num: int) -> None:
    """In a requeued job: delete the runs its earlier attempts logged, so the job has one run."""
    try:
        client, runs = _job_runs(sweep_dir, job_num)
        for run in runs:
            client.set_tag(run.info.run_id, "superseded_by", f"requeued SLURM job {os.environ.get('SLURM_JOB_ID')}")
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "KILLED")
            client.delete_run(run.info.run_id)
        if runs:
            log.info("requeued job #%d: deleted %d run(s) of its earlier attempt", job_num, len(runs))
    except Exception:
        log.exception("could not retire the earlier attempt's runs of job #%d", job_num)


def _note_failures(sweep_dir: Path, returns: Sequence[JobReturn], first: int) -> None:
    """Log and tag on the parent run how many jobs failed and why (``sweep_failed_jobs``)."""
    failed = [
        f"job {idx}: {' '.join(str(ret._return_value).split())[:300]}"
        for idx, ret in enumerate(returns, start=first)
        if ret.status == JobStatus.FAILED
    ]
    if not failed:
        return
    note = f"{len(failed)} of {len(returns)} jobs failed: " + "; ".join(failed)
    log.warning("%s", note)
    parent = sweep_parent(sweep_dir)
    if parent is None:
        return
    try:
        MlflowClient(parent["tracking_uri"]).set_tag(parent["run_id"], "sweep_failed_jobs", note[:5000])
    except Exception:
        log.exception("could not tag the parent run with the failed jobs")
