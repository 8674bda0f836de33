"""Hydra callback: one parent MLflow run per sweep, job runs nested under it, a comparison table at the end.

Registered in ``conf/run.yaml`` under ``hydra.callbacks``. In a multirun it

1. creates the tracking store and experiment once (jobs never race to create SQLite tables),
2. for parallel launchers over a SQLite store, starts a local ``mlflow server`` (steering.sweep.server)
   so that jobs log over HTTP instead of writing SQLite concurrently,
3. opens the parent run (client API, so no active fluent run leaks into in-process jobs); if the store,
   the server or the parent run cannot be set up, the sweep stops before any job with one line and
   exit status 2 (Hydra would turn the callback's exception into a warning and run every job untracked),
4. writes ``mlflow_parent.json`` into the sweep dir; ``steering.tracking.runs.job_run`` reads it and
   nests each job's run under the parent (tags ``mlflow.parentRunId``, ``sweep_id``),
5. at the end builds the sweep's report (steering.sweep.report: ``comparison.csv``/``comparison.md``,
   a figure, contrasts and steerability where they apply) from the child runs, logs it to the parent
   and writes it into the sweep dir; with ``confirm.enabled`` it first runs the best row once more on
   ``confirm.split`` (steering.sweep.confirmation).

Hydra 1.3's sweeper re-raises a failed job's exception after the batch, so ``on_multirun_end`` is
never called then; an ``atexit`` hook finishes the sweep in that case, and the table still has
every job (the failed ones marked FAILED). The running sweep is the callback's own state
(:class:`ActiveSweep`), never pickled to workers.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from steering.errors import SteeringError, TrackingError, one_line
from steering.stats import multiplicity as mult
from steering.sweep import confirmation as conf
from steering.sweep import offline, overrides
from steering.sweep import table as tbl
from steering.sweep.identity import launcher_name, new_sweep_id, sweep_identity
from steering.sweep.interrupt import (
    InterruptWatch,
    bounded_cleanup,
    end_running_children,
    finish_interrupted,
    note_unfinished,
    planned_jobs,
)
from steering.sweep.launcher_options import check_launcher_options
from steering.sweep.parent import annotate_parent
from steering.sweep.report import SweepReport, terminal_text, write_report
from steering.sweep.server import DEFAULT_TIMEOUT, LocalServer, nodes_elsewhere, start_server
from steering.sweep.slurm_launcher import check_slurm_request
from steering.tracking import links as ui_links
from steering.tracking.mlflow_logs import route_mlflow_logging
from steering.tracking.preflight import check_tracking, tracking_environment
from steering.tracking.resume import fail_dead_sweeps
from steering.tracking.runs import PARENT_FILE, configure, sweep_parent

log = logging.getLogger(__name__)

PARALLEL_LAUNCHERS = ("joblib", "submitit")


def varied_keys(config: DictConfig) -> list[str]:
    """Keys swept by this multirun: command-line sweep overrides and ``hydra.sweeper.params``."""
    return overrides.varied_keys(*overrides.task_and_params(config))


def check_launcher(config: DictConfig) -> None:
    """Stop before any work (no server, no parent run) when the launcher's scheduler is not there, its
    request fits no node or one of its options cannot work: one line on stderr, exit 2."""
    if "slurmlauncher" in launcher_name(config).replace("_", "") and shutil.which("sbatch") is None:
        print(
            "steering.run: hydra/launcher=slurm needs SLURM, but `sbatch` is not on PATH; "
            "on one machine try hydra/launcher=submitit_local (docs/sweeps.md)",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        if "steering_slurm" in launcher_name(config):
            check_slurm_request(config)  # a request no node fits would pend forever
        check_launcher_options(config)
    except SteeringError as exc:  # Hydra only warns about a callback's exception; SystemExit stops the sweep
        print(one_line(exc), file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@dataclass
class ActiveSweep:
    """The sweep this process launched: its parent run (``info``, as in ``mlflow_parent.json``) and settings."""

    info: dict[str, Any]
    sweep_dir: Path
    confirm: conf.ConfirmSettings
    bootstrap: dict[str, float | int] = field(default_factory=dict)
    server: LocalServer | None = None
    done: bool = False
    interrupted: bool = False


def _confirm_settings(config: DictConfig) -> conf.ConfirmSettings:
    try:
        confirm = conf.confirm_settings(config)
    except conf.ConfirmConfigError as exc:
        # Hydra turns a callback's Exception into a warning and runs the sweep anyway; SystemExit stops it.
        log.error("%s", exc)
        raise SystemExit(2) from None
    if confirm.enabled and OmegaConf.select(config, "data.eval_split") == confirm.split:
        log.warning("the sweep is evaluated on %s, the confirmation split: it confirms nothing", confirm.split)
    if confirm.enabled and "submitit" in launcher_name(config):
        log.warning("confirmation runs at the end of the sweep in this process (the submit host), not as a job")
    return confirm


def _bootstrap(config: DictConfig) -> dict[str, float | int]:
    metrics = config.get("metrics") or {}
    return {
        "resamples": int(metrics.get("bootstrap_resamples", 2000)),
        "confidence": float(metrics.get("confidence", 0.95)),
        "seed": int(metrics.get("seed", 0)),
    }


def _open_store(
    backend_uri: str, experiment: str, resume: bool, cache_dir: str | None = None
) -> tuple[str, MlflowClient]:
    """The store and experiment exist before any job; a store that cannot be used stops the sweep."""
    check_tracking(backend_uri)
    experiment_id = configure(backend_uri, experiment, cache_dir)
    client = MlflowClient(backend_uri)
    if resume:
        fail_dead_sweeps(client, experiment_id)
    return experiment_id, client


def setup_error_line(exc: Exception, backend_uri: str) -> str:
    """The one line printed when the sweep's tracking cannot be set up (ours name the file or URI already)."""
    if isinstance(exc, SteeringError):
        return one_line(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return one_line(TrackingError(f"{backend_uri}: the sweep's tracking set-up failed: {type(exc).__name__}: {first}"))


def _open_parent(config: DictConfig, sweep_dir: Path, client: MlflowClient, experiment_id: str) -> dict[str, Any]:
    """Create the parent run; returns what the jobs need to nest under it (``mlflow_parent.json``)."""
    backend_uri = str(config.tracking.uri)
    sweep = sweep_identity(config, new_sweep_id(), sweep_dir=str(sweep_dir.resolve()))
    parent = client.create_run(experiment_id, run_name=sweep.run_name, tags=sweep.tags)
    return {
        "run_id": parent.info.run_id,
        "sweep_id": sweep.sweep_id,
        "tracking_uri": backend_uri,
        "backend_uri": backend_uri,
        "experiment_id": experiment_id,
        "experiment": str(config.tracking.experiment),
        "varied": sweep.varied,
        "planned_jobs": planned_jobs(config),
        "preset": sweep.preset,
    }


class MlflowSweepCallback(Callback):
    """See the module docstring. ``server``: ``auto`` (parallel launchers only), ``always`` or ``never``."""

    def __init__(
        self,
        server: str = "auto",
        host: str = "127.0.0.1",
        advertise_host: str | None = None,
        server_timeout: float = DEFAULT_TIMEOUT,
        port: int | None = None,
    ) -> None:
        if server not in ("auto", "always", "never"):
            raise ValueError(f"server must be auto, always or never, not {server!r}")
        self.server = server
        self.host = host
        self.advertise_host = advertise_host
        self.server_timeout = server_timeout
        self.port = port

    def __getstate__(self) -> dict[str, Any]:  # pickled to joblib/submitit workers without the live sweep
        return {k: v for k, v in self.__dict__.items() if k not in ("_sweep", "_watch")}

    # -- sweep start -------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config)
        if offline.is_offline(config):  # tracking=offline: no store, server or parent here (steering-merge)
            offline.start_offline_sweep(config)
            return
        route_mlflow_logging()
        tracking_environment()
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        confirm = _confirm_settings(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            info, server = self._start_tracking(config, sweep_dir)
        except Exception as exc:
            # Hydra only warns about a callback's exception and runs every job untracked; SystemExit stops it.
            log.debug("the sweep's tracking set-up failed", exc_info=True)
            print(setup_error_line(exc, str(config.tracking.uri)), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        self._sweep = ActiveSweep(info, sweep_dir, confirm, _bootstrap(config), server)
        self._watch = InterruptWatch(self.mark_interrupted)
        self._watch.install()
        atexit.register(self._finish_at_exit)
        if server is not None:
            # MLflow would print each run's link on the temporary server, which is gone after the sweep;
            # the jobs' summaries print links to the store that stays instead (workers inherit this).
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        (sweep_dir / PARENT_FILE).write_text(json.dumps(info, indent=2))
        via = f" (jobs log through the temporary server {server.uri})" if server else ""
        log.info("sweep %s: parent run %s in %s%s", info["sweep_id"], info["run_id"], info["backend_uri"], via)

    def _start_tracking(self, config: DictConfig, sweep_dir: Path) -> tuple[dict[str, Any], LocalServer | None]:
        """The store, the private server (if any), then the parent run: a failure leaves no parent run and no
        server behind, and nothing has been launched yet."""
        backend_uri = str(config.tracking.uri)
        resume = bool(OmegaConf.select(config, "resume"))
        cache_dir = overrides.resolved_or_none(config, "cache.dir")  # where a new store's template lives
        experiment_id, client = _open_store(backend_uri, str(config.tracking.experiment), resume, cache_dir)
        server = self._maybe_start_server(config, backend_uri, sweep_dir, experiment_id)
        try:
            info = _open_parent(config, sweep_dir, client, experiment_id)
        except BaseException:
            if server is not None:
                server.stop()
            raise
        info["tracking_uri"] = server.uri if server else backend_uri
        return info, server

    def _maybe_start_server(
        self, config: DictConfig, backend_uri: str, sweep_dir: Path, experiment_id: str
    ) -> LocalServer | None:
        launcher = launcher_name(config)
        parallel = any(name in launcher for name in PARALLEL_LAUNCHERS)
        if self.server == "never" or (self.server == "auto" and not parallel):
            return None
        if not backend_uri.startswith("sqlite:"):
            return None  # already a server (tracking=server) or a file store: use it as it is
        advertise = self.advertise_host or (socket.getfqdn() if self.host == "0.0.0.0" else None)
        partition = overrides.resolved_or_none(config, "hydra.launcher.partition")
        if "slurm" in launcher and self.host.startswith("127.") and nodes_elsewhere(partition):
            log.warning(
                "SLURM jobs cannot reach a server on %s; use tracking=server or "
                "hydra.callbacks.mlflow_sweep.host=0.0.0.0",
                self.host,
            )
        return start_server(
            backend_uri,
            sweep_dir,
            host=self.host,
            port=self.port,
            advertise_host=advertise,
            timeout=self.server_timeout,
            experiment_id=experiment_id,
        )

    # -- per job (runs in the job's process: in-process, joblib worker or submitit job) -----------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._act_on_a_dropped_interrupt()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.FAILED:
            try:
                _record_failed_job(config, job_return)
                offline.record_failed_job(config, job_return)  # tracking=offline: in the job's own store
            except Exception:  # never let bookkeeping hide the job's own error
                log.exception("could not record the failed job in MLflow")
        self._act_on_a_dropped_interrupt()

    def _act_on_a_dropped_interrupt(self) -> None:
        """An interrupt whose exception Python dropped (steering.sweep.interrupt.InterruptWatch.act_again)
        ends the sweep at the next job boundary; only where the sweep's watch is (the sweep's own process)."""
        watch = getattr(self, "_watch", None)
        if watch is not None and getattr(self, "_sweep", None) is not None and not self._sweep.done:
            watch.act_again()

    # -- sweep end ---------------------------------------------------------------------------------
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish_sweep()

    def mark_interrupted(self) -> None:
        """Ctrl-C or SIGTERM ended the sweep: its parent ends KILLED, not FINISHED."""
        sweep = getattr(self, "_sweep", None)
        if sweep is not None:
            sweep.interrupted = True

    def finish_sweep(self) -> Path | None:
        """Finish the sweep this callback started (once): see :func:`finish_sweep`."""
        sweep = getattr(self, "_sweep", None)
        if sweep is None or sweep.done:
            return None
        sweep.done = True
        watch = getattr(self, "_watch", None)
        try:
            if sweep.interrupted:  # ends within seconds: steering.sweep.interrupt
                signum = (watch.signum if watch is not None else None) or signal.SIGTERM
                with bounded_cleanup(sweep.sweep_dir, status=128 + signum):
                    if sweep.server is not None:
                        sweep.server.stop(timeout=3)
                    return finish_interrupted(MlflowClient(sweep.info["backend_uri"]), sweep.info, sweep.sweep_dir)
            return finish_sweep(sweep)  # the watch stays: an interrupt now still ends the parent KILLED
        finally:
            if watch is not None:
                watch.remove()

    def _finish_at_exit(self) -> None:
        try:
            self.finish_sweep()
        except KeyboardInterrupt:  # interrupted while the report was written: the parent is KILLED
            print(f"error: interrupted; the sweep's report is incomplete: {self._sweep.sweep_dir}", file=sys.stderr)
        except Exception:
            log.exception("could not finish the sweep")


def _record_failed_job(config: DictConfig, job_return: JobReturn) -> None:
    """Make sure a failed job shows as a FAILED child run with its error, even if it failed before logging."""
    parent = sweep_parent(config.hydra.sweep.dir)
    if parent is None:
        return
    error = job_return._return_value  # reading .return_value would re-raise
    message = f"{type(error).__name__}: {error}"[:1000]
    client = MlflowClient(parent["tracking_uri"])
    num = str(config.hydra.job.num)
    query = f"tags.`mlflow.parentRunId` = '{parent['run_id']}' and tags.{tbl.TAG_JOB} = '{num}'"
    existing = client.search_runs([parent["experiment_id"]], query, max_results=1)
    if existing:
        run_id = existing[0].info.run_id
    else:
        task = list(config.hydra.overrides.task)
        values = overrides.override_values(task)
        name = "failed-" + "-".join(f"{k}={values[k]}" for k in parent.get("varied", []) if k in values)[:200]
        run = client.create_run(
            parent["experiment_id"],
            run_name=name,
            tags={
                "mlflow.parentRunId": parent["run_id"],
                tbl.TAG_SWEEP_ID: parent["sweep_id"],
                tbl.TAG_JOB: num,
                tbl.TAG_OVERRIDES: json.dumps(task),
            },
        )
        run_id = run.info.run_id
        client.set_terminated(run_id, "FAILED")
    client.set_tag(run_id, "sweep_error", message)


def finish_sweep(sweep: ActiveSweep) -> Path:
    """Stop the server, confirm the best row (if enabled), write the sweep's report from the child runs,
    attach it to the parent, close the parent."""
    if sweep.server is not None:
        sweep.server.stop()
    info, sweep_dir, interrupted = sweep.info, sweep.sweep_dir, sweep.interrupted
    client = MlflowClient(info["backend_uri"])
    status = "KILLED" if interrupted else "FAILED"
    try:
        end_running_children(client, info["experiment_id"], info["run_id"])
        runs = tbl.find_sweep(client, info["sweep_id"], [info["experiment_id"]])
        table = tbl.comparison_table(runs.children, info["varied"])
        confirmed: list[Path] = []
        if sweep.confirm.enabled and not interrupted:  # an interrupted sweep selects nothing to confirm
            confirmed = _confirm(client, info, sweep_dir, table, runs.children, sweep.confirm)
            runs = tbl.find_sweep(client, info["sweep_id"], [info["experiment_id"]])
        report = write_report(
            client,
            runs,
            sweep_dir,
            varied=info["varied"],
            bootstrap=sweep.bootstrap,
            preset=info.get("preset"),
            table=table,
        )
        never = note_unfinished(sweep_dir / "comparison.md", info.get("planned_jobs"), len(table), interrupted)
        for path in report.paths + confirmed + report.analyses.paths:
            client.log_artifact(info["run_id"], str(path))
        finished = _annotate(client, info, report, never)
        if not interrupted:
            status = "FINISHED" if finished else "FAILED"
        log.info(
            "sweep %s: %d/%d jobs finished; full table and figure in %s\n%s\n%s",
            info["sweep_id"],
            finished,
            len(table),
            sweep_dir,
            terminal_text(report),
            ui_links.how_to_open(info["backend_uri"], str(info["experiment_id"]), info["run_id"]),
        )
    finally:
        client.set_terminated(info["run_id"], "KILLED" if sweep.interrupted else status)
    return sweep_dir / "comparison.csv"


def _annotate(client: MlflowClient, info: dict[str, Any], report: SweepReport, never: int | None) -> int:
    """The parent's summary (tags, metrics, adjusted p values on each child); returns the finished jobs."""
    table = report.table
    annotate_parent(client, info["run_id"], report.runs, table, info["sweep_id"])
    parent = dict(report.analyses.metrics)  # n_jobs, n_failed, best Δr: annotate_parent
    parent["multiplicity_family_size"] = _log_adjusted(client, table)
    if never is not None:
        parent["n_not_run"] = never
    now = int(datetime.now().timestamp() * 1000)
    client.log_batch(info["run_id"], metrics=[Metric(k, float(v), now, 0) for k, v in parent.items()])
    return int((table["status"] == "FINISHED").sum())


def _log_adjusted(client: MlflowClient, table: Any) -> int:
    """Holm/BH of the sweep's family on each child run too (visible in the MLflow run table); returns
    the family's size (the number of Holm-adjusted tests)."""
    now = int(datetime.now().timestamp() * 1000)
    n_tests = 0
    for row in table.to_dict("records"):
        values = {c: float(row[c]) for c in mult.ADJUSTED_COLUMNS if c in row and math.isfinite(float(row[c]))}
        n_tests += sum(1 for c in values if c.endswith("_p_holm"))
        if values and row.get("run_id"):
            client.log_batch(row["run_id"], metrics=[Metric(k, v, now, 0) for k, v in values.items()])
    return n_tests


def _confirm(
    client: MlflowClient,
    info: dict[str, Any],
    sweep_dir: Path,
    table: Any,
    children: list[Any],
    settings: conf.ConfirmSettings,
) -> list[Path]:
    """Run the confirmation; a failure is recorded on the parent (tag ``confirmation_error``), not raised."""
    row = conf.choose(table, settings.criterion)
    if row is None:
        client.set_tag(info["run_id"], "confirmation_error", "no finished row to choose from")
        return []
    chosen = next(r for r in children if r.info.run_id == row["run_id"])
    try:
        done = conf.run_confirmation(client, info, sweep_dir, table, settings, chosen)
    except Exception as exc:
        log.exception("confirmation run failed")
        client.set_tag(info["run_id"], "confirmation_error", f"{type(exc).__name__}: {exc}"[:1000])
        return []
    client.set_tag(info["run_id"], "confirmation_run_id", done.run_id)
    client.set_tag(info["run_id"], "confirmation_choice", str(done.table["choice"].iloc[0]))
    for record in done.table.itertuples():
        client.log_metric(info["run_id"], f"confirmed_dr_{record.target}", float(record.confirmed_dr))
    log.info("confirmation of job %s on %s: run %s, %s", row.get("job"), settings.split, done.run_id, done.path)
    return [done.path]
