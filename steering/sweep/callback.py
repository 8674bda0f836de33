"""Hydra callback: one parent MLflow run per sweep, job runs nested under it, a comparison table at the end.

Registered in ``conf/run.yaml`` under ``hydra.callbacks``. In a multirun it

1. creates the tracking store and experiment once (jobs never race to create SQLite tables),
2. opens the parent run (client API, so no active fluent run leaks into in-process jobs),
3. for parallel launchers over a SQLite store, starts a local ``mlflow server`` so that jobs log
   over HTTP instead of writing SQLite concurrently,
4. writes ``mlflow_parent.json`` into the sweep dir; ``steering.tracking.runs.job_run`` reads it and
   nests each job's run under the parent (tags ``mlflow.parentRunId``, ``sweep_id``),
5. at the end builds ``comparison.csv``/``comparison.md`` (and a strength-response figure when
   strength varies) from the child runs, logs them to the parent and writes them into the sweep dir;
   with ``confirm.enabled`` it first runs the best row once more on ``confirm.split``
   (steering.sweep.confirmation), and it adds contrasts and steerability where they apply
   (steering.sweep.analysis).

Hydra 1.3's sweeper re-raises a failed job's exception after the batch, so ``on_multirun_end`` is
never called then; an ``atexit`` hook finishes the sweep in that case, and the table still has
every job (the failed ones marked FAILED).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import socket
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.core.utils import JobReturn, JobStatus  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from steering.cli import on_interrupt  # noqa: E402
from steering.errors import TrackingError, one_line  # noqa: E402
from steering.stats import multiplicity as mult  # noqa: E402
from steering.sweep import confirmation as conf  # noqa: E402
from steering.sweep import formats  # noqa: E402
from steering.sweep import table as tbl  # noqa: E402
from steering.sweep.analysis import write_analyses  # noqa: E402
from steering.sweep.interrupt import end_running_children, note_unfinished, planned_jobs  # noqa: E402
from steering.sweep.logs import route_mlflow_logging  # noqa: E402
from steering.sweep.parent import annotate_parent  # noqa: E402
from steering.sweep.server import LocalServer, start_server  # noqa: E402
from steering.tracking import links as ui_links  # noqa: E402
from steering.tracking.preflight import check_tracking  # noqa: E402
from steering.tracking.resume import fail_dead_sweeps  # noqa: E402
from steering.tracking.runs import PARENT_FILE, configure, process_tags, sweep_parent  # noqa: E402

log = logging.getLogger(__name__)

PARALLEL_LAUNCHERS = ("joblib", "submitit")
# Process-level state: the callback object itself is pickled to joblib/submitit workers, a server handle is not.
_ACTIVE: dict[str, Any] = {}


def varied_keys(config: DictConfig) -> list[str]:
    """Keys swept by this multirun: command-line sweep overrides and ``hydra.sweeper.params``."""
    keys: list[str] = []
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or [])
    for override in OverridesParser.create().parse_overrides(task):
        if override.is_sweep_override():
            keys.append(override.get_key_element().lstrip("+~"))
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    keys += [str(k).lstrip("+~") for k in params]
    return list(dict.fromkeys(keys))


def _launcher_name(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.launcher._target_") or "").lower()


def check_launcher(config: DictConfig) -> None:
    """Stop before any work (no server, no parent run) when the launcher's scheduler is not there."""
    if "slurmlauncher" in _launcher_name(config).replace("_", "") and shutil.which("sbatch") is None:
        print(
            "steering.run: hydra/launcher=slurm needs SLURM, but `sbatch` is not on PATH; "
            "on one machine try hydra/launcher=submitit_local (docs/sweeps.md)",
            file=sys.stderr,
        )
        sys.exit(2)


class MlflowSweepCallback(Callback):
    """See the module docstring. ``server``: ``auto`` (parallel launchers only), ``always`` or ``never``."""

    def __init__(
        self,
        server: str = "auto",
        host: str = "127.0.0.1",
        advertise_host: str | None = None,
        server_timeout: float = 120.0,
    ) -> None:
        if server not in ("auto", "always", "never"):
            raise ValueError(f"server must be auto, always or never, not {server!r}")
        self.server = server
        self.host = host
        self.advertise_host = advertise_host
        self.server_timeout = server_timeout

    # -- sweep start -------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config)
        route_mlflow_logging()
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        try:
            confirm = conf.confirm_settings(config)
        except conf.ConfirmConfigError as exc:
            # Hydra turns a callback's Exception into a warning and runs the sweep anyway; SystemExit stops it.
            log.error("%s", exc)
            raise SystemExit(2) from None
        if confirm.enabled and OmegaConf.select(config, "data.eval_split") == confirm.split:
            log.warning("the sweep is evaluated on %s, the confirmation split: it confirms nothing", confirm.split)
        if confirm.enabled and "submitit" in _launcher_name(config):
            log.warning("confirmation runs at the end of the sweep in this process (the submit host), not as a job")
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        backend_uri = str(config.tracking.uri)
        experiment = str(config.tracking.experiment)
        try:
            check_tracking(backend_uri)
        except TrackingError as exc:  # Hydra would only warn about a failing callback and run every job
            print(one_line(exc), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        experiment_id = configure(backend_uri, experiment)  # the store and experiment exist before any job
        client = MlflowClient(backend_uri)
        if OmegaConf.select(config, "resume"):
            fail_dead_sweeps(client, experiment_id)
        sweep_id = f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        preset = OmegaConf.select(config, "hydra.runtime.choices.experiment")
        varied = varied_keys(config)
        task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or [])
        tags = {
            tbl.TAG_SWEEP_ID: sweep_id,
            tbl.TAG_ROLE: "parent",
            tbl.TAG_VARIED: json.dumps(varied),
            "sweep_dir": str(sweep_dir.resolve()),
            "sweep_command_overrides": json.dumps(task)[:5000],
            "sweep_launcher": _launcher_name(config) or "basic",
            **process_tags(),
        }
        if preset:
            tags[tbl.TAG_PRESET] = str(preset)
        parent = client.create_run(experiment_id, run_name=f"sweep-{preset or 'multirun'}-{sweep_id}", tags=tags)
        info = {
            "run_id": parent.info.run_id,
            "sweep_id": sweep_id,
            "tracking_uri": backend_uri,
            "backend_uri": backend_uri,
            "experiment_id": experiment_id,
            "experiment": experiment,
            "varied": varied,
            "planned_jobs": planned_jobs(config),
            "preset": str(preset) if preset else None,
        }
        metrics = config.get("metrics") or {}
        bootstrap = {
            "resamples": int(metrics.get("bootstrap_resamples", 2000)),
            "confidence": float(metrics.get("confidence", 0.95)),
            "seed": int(metrics.get("seed", 0)),
        }
        # Registered before the server starts, so an interrupt while it starts still closes the parent.
        _ACTIVE.update(info=info, sweep_dir=sweep_dir, server=None, done=False, confirm=confirm, bootstrap=bootstrap)
        on_interrupt(mark_interrupted)  # Ctrl-C or SIGTERM of the app ends the parent KILLED
        atexit.register(_finish_at_exit)
        server = self._maybe_start_server(config, backend_uri, sweep_dir)
        if server is not None:
            # MLflow would print each run's link on the temporary server, which is gone after the sweep;
            # the jobs' summaries print links to the store that stays instead (workers inherit this).
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        info["tracking_uri"] = server.uri if server else backend_uri
        _ACTIVE["server"] = server
        (sweep_dir / PARENT_FILE).write_text(json.dumps(info, indent=2))
        via = f" (jobs log through the temporary server {server.uri})" if server else ""
        log.info("sweep %s: parent run %s in %s%s", sweep_id, parent.info.run_id, backend_uri, via)

    def _maybe_start_server(self, config: DictConfig, backend_uri: str, sweep_dir: Path) -> LocalServer | None:
        launcher = _launcher_name(config)
        parallel = any(name in launcher for name in PARALLEL_LAUNCHERS)
        if self.server == "never" or (self.server == "auto" and not parallel):
            return None
        if not backend_uri.startswith("sqlite:"):
            return None  # already a server (tracking=server) or a file store: use it as it is
        advertise = self.advertise_host or (socket.getfqdn() if self.host == "0.0.0.0" else None)
        if "slurm" in launcher and self.host.startswith("127."):
            log.warning(
                "SLURM jobs cannot reach a server on %s; use tracking=server or "
                "hydra.callbacks.mlflow_sweep.host=0.0.0.0",
                self.host,
            )
        return start_server(
            backend_uri, sweep_dir, host=self.host, advertise_host=advertise, timeout=self.server_timeout
        )

    # -- per job (runs in the job's process: in-process, joblib worker or submitit job) -----------
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        try:
            _record_failed_job(config, job_return)
        except Exception:  # never let bookkeeping hide the job's own error
            log.exception("could not record the failed job in MLflow")

    # -- sweep end ---------------------------------------------------------------------------------
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_sweep()


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
        overrides = list(config.hydra.overrides.task)
        values = tbl.override_values(overrides)
        name = "failed-" + "-".join(f"{k}={values[k]}" for k in parent.get("varied", []) if k in values)[:200]
        run = client.create_run(
            parent["experiment_id"],
            run_name=name,
            tags={
                "mlflow.parentRunId": parent["run_id"],
                tbl.TAG_SWEEP_ID: parent["sweep_id"],
                tbl.TAG_JOB: num,
                tbl.TAG_OVERRIDES: json.dumps(overrides),
            },
        )
        run_id = run.info.run_id
        client.set_terminated(run_id, "FAILED")
    client.set_tag(run_id, "sweep_error", message)


def finish_sweep() -> Path | None:
    """Stop the server, confirm the best row (if enabled), build the comparison and the analyses from the
    child runs, attach them to the parent, close the parent."""
    if not _ACTIVE or _ACTIVE.get("done"):
        return None
    _ACTIVE["done"] = True
    server: LocalServer | None = _ACTIVE.get("server")
    if server is not None:
        server.stop()
    info, sweep_dir = _ACTIVE["info"], _ACTIVE["sweep_dir"]
    client = MlflowClient(info["backend_uri"])
    interrupted = bool(_ACTIVE.get("interrupted"))
    status = "KILLED" if interrupted else "FAILED"
    try:
        end_running_children(client, info["experiment_id"], info["run_id"])
        runs = tbl.find_sweep(client, info["sweep_id"], [info["experiment_id"]])
        table = tbl.comparison_table(runs.children, info["varied"])
        settings: conf.ConfirmSettings = _ACTIVE.get("confirm") or conf.ConfirmSettings()
        paths: list[Path] = []
        if settings.enabled and not interrupted:  # an interrupted sweep selects nothing to confirm
            paths += _confirm(client, info, sweep_dir, table, runs.children, settings)
            runs = tbl.find_sweep(client, info["sweep_id"], [info["experiment_id"]])
        analyses = write_analyses(client, table, sweep_dir, _ACTIVE.get("bootstrap") or {})
        notes = conf.selection_notes(runs.children, len(table))
        fixed = tbl.fixed_choices(runs.children)
        paths = (
            tbl.write_outputs(
                table,
                info["sweep_id"],
                sweep_dir,
                notes,
                analyses.sections,
                preset=info.get("preset"),
                varied=info["varied"],
                fixed=fixed,
            )
            + paths
        )
        never = note_unfinished(sweep_dir / "comparison.md", info.get("planned_jobs"), len(table), interrupted)
        for path in paths + analyses.paths:
            client.log_artifact(info["run_id"], str(path))
        annotate_parent(client, info["run_id"], runs, table, info["sweep_id"])
        finished = int((table["status"] == "FINISHED").sum())
        for name, value in analyses.metrics.items():  # n_jobs, n_failed, best Δr: annotate_parent
            client.log_metric(info["run_id"], name, value)
        _log_adjusted(client, info["run_id"], table)
        if never is not None:
            client.log_metric(info["run_id"], "n_not_run", never)
        if not interrupted:
            status = "FINISHED" if finished else "FAILED"
        choices = [c for c in tbl.choice_columns(table) if table[c].nunique(dropna=False) > 1]
        log.info(
            "sweep %s: %d/%d jobs finished; full table and figure in %s\n%s\n%s",
            info["sweep_id"],
            finished,
            len(table),
            sweep_dir,
            formats.terminal_view(table, choices, 100),
            ui_links.how_to_open(info["backend_uri"], str(info["experiment_id"]), info["run_id"]),
        )
    finally:
        client.set_terminated(info["run_id"], status)
    return sweep_dir / "comparison.csv"


def mark_interrupted() -> None:
    """Ctrl-C or SIGTERM ended the sweep: its parent ends KILLED, not FINISHED."""
    if _ACTIVE:
        _ACTIVE["interrupted"] = True


def _log_adjusted(client: MlflowClient, parent_id: str, table: Any) -> None:
    """Holm/BH of the sweep's family on each child run too (visible in the MLflow run table)."""
    now = int(datetime.now().timestamp() * 1000)
    n_tests = 0
    for row in table.to_dict("records"):
        values = {c: float(row[c]) for c in mult.ADJUSTED_COLUMNS if c in row and math.isfinite(float(row[c]))}
        n_tests += sum(1 for c in values if c.endswith("_p_holm"))
        if values and row.get("run_id"):
            client.log_batch(row["run_id"], metrics=[Metric(k, v, now, 0) for k, v in values.items()])
    client.log_metric(parent_id, "multiplicity_family_size", n_tests)


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


def _finish_at_exit() -> None:
    try:
        finish_sweep()
    except Exception:
        log.exception("could not finish the sweep")
