"""One steering evaluation: resolve inputs, choose signals, steer, measure, log to MLflow."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from steering.assets.resolve import resolve_inputs
from steering.assets.validation import (
    check_finite_results,
    check_input_paths,
    check_run_inputs,
    check_run_options,
    prediction_columns,
)
from steering.data import FeatureFile, file_hash, split_indices
from steering.data.binning import Binning
from steering.engine import SteeringSpec, select_connections
from steering.engine.assign import ORACLE_MODES
from steering.engine.hardware import cpu_threads, resolve_device
from steering.engine.reuse import SweepReuse
from steering.evaluation import TARGETS, RunResult, cache_dir, evaluate_configuration
from steering.model import Connection, load_model
from steering.results import artifact_files, logging_failed, mark_logged, record_pending, sync_pending, write_results
from steering.signals import SignalSet, cached_signals, extract_signals, load_signals, save_signals
from steering.tracking.dataset_input import log_feature_input
from steering.tracking.links import how_to_open, store_uri
from steering.tracking.preflight import check_tracking
from steering.tracking.resume import fail_dead_runs
from steering.tracking.runs import config_hash, configure, find_finished, job_run, sweep_choices, sweep_parent

log = logging.getLogger(__name__)


def steering_spec(cfg: DictConfig, connections: tuple[Connection, ...]) -> SteeringSpec:
    return SteeringSpec(
        connections=select_connections(connections, cfg.pathway.name, cfg.layer.name),
        method=cfg.method.name,
        strength=float(cfg.strength),
        alpha=float(cfg.alpha),
        priming=bool(cfg.priming),
    )


#: How a choice reads in a run name (the rest read ``key=value``).
_SHORT = {"strength": "s{}", "alpha": "a{}"}
_BARE = ("binning", "pathway", "layer", "method", "category", "approach")


def run_name(cfg: DictConfig, leading: Mapping[str, str] | None = None) -> str:
    """Readable name from the choices, e.g. ``9bin-valence-conv4-lrm-s1.5-oracle``.

    ``leading`` (in a sweep: the choices it varies, as typed) comes first, so that the MLflow runs
    list, which cuts long names, shows what tells the jobs apart: ``bypass-s2 · 9bin-valence-conv4-oracle``.
    """
    named = {
        "binning": str(cfg.binning.name),
        "pathway": str(cfg.pathway.name),
        "layer": str(cfg.layer.name),
        "method": str(cfg.method.name),
        "strength": f"s{cfg.strength:g}",
        "alpha": f"a{cfg.alpha:g}" if float(cfg.alpha) != 1.0 else "",
        "category": _category_part(cfg),
        "priming": "primed" if cfg.priming else "",
    }
    first = []
    for key, value in (leading or {}).items():
        key = key.lstrip("+~")
        if key in _SHORT:
            first.append(_SHORT[key].format(value))
        elif key in _BARE:
            first.append(named.get(key) or str(value))
        else:
            first.append(f"{key.rsplit('.', 1)[-1]}={value}")
    shown = {k.lstrip("+~") for k in leading or {}}
    rest = "-".join(v for k, v in named.items() if v and k not in shown)
    return f"{'-'.join(first)} · {rest}" if first else rest


def _category_part(cfg: DictConfig) -> str:
    category = cfg.category.name + (f":{cfg.category.target}" if cfg.category.name == "fixed" else "")
    if cfg.category.name == "predicted" and cfg.category.get("source", "final") != "final":
        category += f":{cfg.category.source}"
    return category


def _load_or_extract_signals(
    cfg: DictConfig, model, ff: FeatureFile, binning: Binning, model_hash: str, data_hash: str, device
) -> SignalSet:
    if cfg.signals.path:
        return load_signals(cfg.signals.path, binning)
    split = cfg.signals.split
    indices = split_indices(len(ff), split, cfg.data.split, cfg.data.train_fraction)
    if split == "all":
        log.warning("signals averaged over ALL samples, the evaluated ones included: results carry leakage")
    provenance = {
        "checkpoint_hash": model_hash,
        "data_hash": data_hash,
        "data_path": str(ff.path),
        "split": split,
        "split_scheme": cfg.data.split,
    }

    def build() -> SignalSet:
        return extract_signals(
            model, ff, indices, binning, batch_size=cfg.batch_size, device=device, provenance=provenance
        )

    return cached_signals(model_hash, data_hash, indices, binning, cache_dir(cfg), build)


def tracking_uri(cfg: DictConfig, sweep_dir: str | Path | None) -> str:
    """Where this job's run goes: the sweep's (private) server in a sweep, else ``tracking.uri``."""
    parent = sweep_parent(sweep_dir)
    return str(parent["tracking_uri"] if parent else cfg.tracking.uri)


def hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def evaluate(
    cfg: DictConfig,
    sweep_dir: str | Path | None = None,
    extra_tags: Mapping[str, str] | None = None,
    reuse: SweepReuse | None = None,
    results_dir: str | Path | None = None,
) -> RunResult:
    """Run one configuration end to end: results to ``results_dir`` (default: Hydra's output
    directory) first, then to one MLflow run (with ``extra_tags``, e.g. a sweep role). Options,
    files and the tracking store are checked before any work.

    ``reuse``: the sweep's :class:`SweepReuse` (created per sweep by the app), so sibling strengths
    share one forward; ``None`` computes only this run's strength.
    """
    # Transitional until evaluate reads the typed RunConfig itself: steering.run passes the typed
    # config, direct callers may still pass a composed DictConfig.
    config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    cfg = OmegaConf.structured(config)
    check_run_options(cfg)
    check_input_paths(cfg)
    check_tracking(tracking_uri(cfg, sweep_dir))
    device = resolve_device(cfg.device)
    binning = Binning.from_conf(config.binning)
    if cfg.model.get("checkpoint") is None and cfg.model.get("arch") is not None:
        # Validate the choice against the demo architecture before building anything.
        arch_conns = tuple(Connection.parse(c) for c in cfg.model.arch.connections)
        steering_spec(cfg, arch_conns)
    trust = bool(cfg.model.get("trust_pickle", False))
    # A given checkpoint is checked before a missing feature file makes the demo build.
    model = load_model(cfg.model.checkpoint, device=device, trust_pickle=trust) if cfg.model.get("checkpoint") else None
    checkpoint, features = resolve_inputs(config)
    model = model or load_model(checkpoint, device=device, trust_pickle=trust)
    spec = steering_spec(cfg, model.connections)
    check_run_inputs(cfg, model, features, binning)
    model_hash, data_hash = file_hash(checkpoint), file_hash(features)
    oracle = cfg.category.name in ORACLE_MODES
    tags = {
        "oracle": str(oracle).lower(),
        "checkpoint": str(checkpoint),
        "checkpoint_hash": model_hash,
        "data_hash": data_hash,
        "steered_connections": ",".join(sorted(str(c) for c in spec.connections)),
    }
    name = run_name(cfg, sweep_choices(sweep_dir))
    digest = config_hash(cfg, model_hash, data_hash)
    tags["config_hash"] = digest
    tags.update(extra_tags or {})
    if cfg.get("resume"):
        fail_dead_runs(tracking_uri(cfg, sweep_dir), cfg.tracking.experiment, digest)
        sync_pending(cache_dir(cfg), digest)
        previous = _previous_result(cfg, digest)
        if previous is not None:
            if sweep_parent(sweep_dir):  # the new sweep's table still gets its row
                resumed = {**tags, "resumed_from": previous.run_id}
                with job_run(cfg, name, resumed, sweep_dir) as run:
                    mlflow.log_metrics(previous.metrics)
                    log_feature_input(features, data_hash, "eval", split=cfg.data.eval_split)
                    _log_tables(previous)
                previous.run_id = run.info.run_id
            return previous
    with FeatureFile(features) as ff, job_run(cfg, name, tags, sweep_dir) as run:
        signals = _load_or_extract_signals(cfg, model, ff, binning, model_hash, data_hash, device)
        eval_idx = split_indices(len(ff), cfg.data.eval_split, cfg.data.split, cfg.data.train_fraction)
        log_feature_input(features, data_hash, "eval", split=cfg.data.eval_split, n_eval=len(eval_idx))
        provenance = signals.metadata or {}
        leak, foreign = _leakage(provenance, data_hash, eval_idx)
        mlflow.set_tags(
            {
                "signals_source": str(signals.source_path or "extracted"),
                "signals_fingerprint": signals.fingerprint(),
                "signals_split": str(provenance.get("split", "file")),
                "signals_leakage": str(leak).lower(),
                "signals_other_data": str(foreign).lower(),
            }
        )
        with cpu_threads(cfg.get("threads")):
            result = evaluate_configuration(
                cfg, model, ff, eval_idx, spec, signals, binning, device, model_hash, data_hash, reuse
            )
        result.run_id, result.experiment_id = run.info.run_id, run.info.experiment_id
        result.tags = {**tags, "signals_leakage": str(leak).lower()}
        _record(cfg, result, signals, run, digest, results_dir)
    return result


def _leakage(provenance: dict, data_hash: str, eval_idx: np.ndarray) -> tuple[bool, bool]:
    """(leakage, signals from another feature file): indices only mean something for the same file."""
    recorded = str(provenance.get("data_hash") or "")
    foreign = bool(recorded) and not (recorded.startswith(data_hash) or data_hash.startswith(recorded))
    if foreign:
        log.warning(
            "the signals were extracted from another feature file (data hash %s, this file %s): "
            "leakage cannot be checked by sample indices",
            recorded[:16],
            data_hash[:16],
        )
        return False, True
    used = set(np.asarray(provenance.get("indices", []), dtype=np.int64).tolist())
    return bool(provenance.get("leakage")) or bool(used & set(eval_idx.tolist())), False


def _record(cfg: DictConfig, result: RunResult, signals: SignalSet, run, digest: str, results_dir) -> Path:
    """Results to disk, then the finite check, then MLflow; a logging failure names the directory."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(results_dir or hydra_output_dir() or tmp)
        signals_file = save_signals(signals, Path(tmp) / f"signals_{signals.binning_name}.json")
        uri = mlflow.get_tracking_uri()
        write_results(
            directory,
            result.metrics,
            {"predictions.csv": result.predictions, "per_category.csv": result.per_category},
            OmegaConf.to_yaml(cfg, resolve=True),
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "experiment": str(cfg.tracking.experiment),
                "tracking_uri": uri,
                "tags": dict(run.data.tags),
                "config_hash": digest,
            },
            {signals_file.name: signals_file.read_text()},
        )
        check_finite_results(result.metrics, result.predictions, prediction_columns(result.predictions))
        try:
            mlflow.log_metrics(dict(result.metrics))
            for path in artifact_files(directory):
                mlflow.log_artifact(str(path))
        except Exception as exc:
            if directory == Path(tmp):
                raise
            record_pending(cache_dir(cfg), digest, directory)
            raise logging_failed(uri, directory, exc) from exc
        if directory != Path(tmp):
            mark_logged(directory, run.info.run_id)
    return directory


def _previous_result(cfg: DictConfig, digest: str) -> RunResult | None:
    """With ``resume=true``: the result of a FINISHED run that computed exactly this, if any."""
    experiment_id = configure(cfg.tracking.uri, cfg.tracking.experiment)
    previous = find_finished(experiment_id, digest)
    if previous is None:
        return None
    log.info("resume: %s already finished as run %s; not run again", run_name(cfg), previous.info.run_id)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        predictions = pd.read_csv(client.download_artifacts(previous.info.run_id, "predictions.csv", tmp))
        per_category = pd.read_csv(client.download_artifacts(previous.info.run_id, "per_category.csv", tmp))
    return RunResult(
        metrics=dict(previous.data.metrics),
        predictions=predictions,
        per_category=per_category,
        run_id=previous.info.run_id,
        experiment_id=experiment_id,
        tags=dict(previous.data.tags),
    )


def _log_tables(result: RunResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in (("predictions.csv", result.predictions), ("per_category.csv", result.per_category)):
            frame.to_csv(Path(tmp) / name, index=False)
            mlflow.log_artifact(str(Path(tmp) / name))


def summary(cfg: DictConfig, result: RunResult, sweep_dir: str | Path | None = None) -> str:
    """A few human lines for the terminal and the job's log, ending with how to open the run."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)  # transitional, as in evaluate
    m = result.metrics
    name = run_name(cfg, sweep_choices(sweep_dir))
    lines = [f"steering run {name}  (n={int(m['n_eval'])}, coverage {m['coverage']:.1%})"]
    for t in TARGETS:
        lines.append(
            f"  {t:8s} r {m[f'r_base_{t}']:.4f} -> {m[f'r_steered_{t}']:.4f}   "
            f"dr {m[f'dr_{t}']:+.4f} [{m[f'dr_{t}_ci_low']:+.4f}, {m[f'dr_{t}_ci_high']:+.4f}]  "
            f"p={m[f'dr_{t}_p']:.2g}"
            + (f"   over {int(m['draws'])} draws: sd {m[f'dr_{t}_draws_sd']:.4f}" if f"dr_{t}_draws_sd" in m else "")
        )
    if "category_accuracy" in m and cfg.category.name not in ("random", "mean"):
        lines.append(f"  {m['category_accuracy']:.1%} of the clips get the signal of their own category")
    lines.append(f"  own feedback moves predictions by {m['feedback_effect']:.4f} on average")
    if result.tags.get("oracle") == "true":
        lines.append("  oracle: signals chosen from the evaluated samples' own ratings")
    if result.tags.get("signals_leakage") == "true":
        lines.append("  LEAKAGE: the signals were averaged over evaluated samples")
    if result.run_id:
        uri = store_uri(cfg.tracking.uri, sweep_dir)
        lines.append(f"  MLflow run {result.run_id} (experiment {result.experiment_id}) in {uri}")
        lines.append("  " + how_to_open(uri, str(result.experiment_id), result.run_id))
    return "\n".join(lines)
