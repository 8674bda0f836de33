"""One steering run end to end: checks, inputs, signals, the pure evaluation, then the recorder
(which alone opens the job's MLflow run).

The app hands over the typed run config (``steering.config.schema.RunConfig``); nothing here reads
a raw Hydra config. Options, files and the tracking store are checked before any work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch

from steering.assets.learned_signals import make_signals, signal_recipe
from steering.assets.resolve import resolve_inputs
from steering.assets.validation import check_input_paths, check_run_inputs, check_run_options
from steering.data import FeatureFile, file_hash, same_feature_file, split_indices
from steering.data.binning import Binning
from steering.engine import SteeringSpec, select_connections
from steering.engine.categories import category_mode
from steering.engine.ledger import ledger_notes
from steering.engine.reuse import SweepReuse
from steering.evaluation import (
    EvaluationInputs,
    RunResult,
    cache_dir,
    evaluate_configuration,
    plan_from_config,
)
from steering.model import Connection, load_model
from steering.signals import SignalSet, cached_signals, extract_signals, load_signals
from steering.signals.io import other_checkpoint
from steering.stats import toward_target
from steering.tracking import recorder
from steering.tracking.dataset_input import log_feature_input
from steering.tracking.links import how_to_open, store_uri
from steering.tracking.loaded_model import described_config
from steering.tracking.preflight import check_tracking, check_writable_dir
from steering.tracking.results import sync_pending
from steering.tracking.resume import fail_dead_runs
from steering.tracking.runs import config_yaml, job_run, sweep_choices, sweep_parent
from steering.util.hardware import cpu_threads, resolve_device
from steering.util.hashing import config_hash
from steering.vocab import TARGETS

if TYPE_CHECKING:
    from steering.config.schema import RunConfig, SignalsConf

log = logging.getLogger(__name__)


def steering_spec(cfg: RunConfig, connections: tuple[Connection, ...]) -> SteeringSpec:
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


def run_name(cfg: RunConfig, leading: Mapping[str, str] | None = None) -> str:
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


def _category_part(cfg: RunConfig) -> str:
    needs = category_mode(cfg.category.name).needs
    category = cfg.category.name + (f":{cfg.category.target}" if "target" in needs else "")
    if "predicted" in needs and cfg.category.source != "final":
        category += f":{cfg.category.source}"
    return category


def tracking_uri(cfg: RunConfig, sweep_dir: str | Path | None) -> str:
    """Where this job's run goes: the sweep's (private) server in a sweep, else ``tracking.uri``."""
    parent = sweep_parent(sweep_dir)
    return str(parent["tracking_uri"] if parent else cfg.tracking.uri)


def hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


@dataclass(frozen=True)
class JobInputs:
    """What a job runs on, resolved and checked: model, files and their content hashes, spec, binning."""

    model: Any
    checkpoint: Path
    features: Path
    model_hash: str
    data_hash: str
    spec: SteeringSpec
    binning: Binning
    device: torch.device


def load_inputs(cfg: RunConfig, binning: Binning, reuse: SweepReuse | None = None) -> JobInputs:
    """Checkpoint, feature file (the demo's for a null one), model and spec, checked against each other.

    ``reuse``: in a sweep, the model of an earlier job with the same checkpoint bytes, device and
    ``trust_pickle`` is used again instead of reloaded.
    """
    device = resolve_device(cfg.device)
    if cfg.model.checkpoint is None and cfg.model.arch is not None:
        # Validate the choice against the demo architecture before building anything.
        steering_spec(cfg, tuple(Connection.parse(c) for c in cfg.model.arch.connections))
    trust = bool(cfg.model.trust_pickle)

    def model_of(path: Path) -> Any:
        if reuse is None or not path.is_file():  # (a missing file fails in load_model, as before)
            return load_model(path, device=device, trust_pickle=trust)
        key = (file_hash(path), str(device), trust)
        return reuse.model(key, lambda: load_model(path, device=device, trust_pickle=trust))

    # A given checkpoint is checked before a missing feature file makes the demo build.
    model = model_of(Path(cfg.model.checkpoint)) if cfg.model.checkpoint else None
    checkpoint, features = resolve_inputs(cfg)
    model = model or model_of(Path(checkpoint))
    spec = steering_spec(cfg, model.connections)
    check_run_inputs(cfg, model, features, binning)
    return JobInputs(model, checkpoint, features, file_hash(checkpoint), file_hash(features), spec, binning, device)


def evaluate(
    cfg: RunConfig,
    sweep_dir: str | Path | None = None,
    extra_tags: Mapping[str, str] | None = None,
    reuse: SweepReuse | None = None,
    results_dir: str | Path | None = None,
) -> RunResult:
    """Run one typed configuration end to end: results to ``results_dir`` (default: Hydra's output
    directory) first, then to one MLflow run (with ``extra_tags``, e.g. a sweep role), opened only
    once the results exist, so a failure before leaves the store untouched. Options, files and the
    tracking store are checked before any work.

    ``reuse``: the sweep's :class:`SweepReuse` (created per sweep by the app), so sibling strengths
    share one forward; ``None`` computes only this run's strength.
    """
    binning = check_run_options(cfg)
    check_input_paths(cfg)
    check_tracking(tracking_uri(cfg, sweep_dir))
    check_writable_dir(cfg.cache.dir, "cache.dir")
    check_writable_dir(results_dir or hydra_output_dir(), "hydra.sweep.dir" if sweep_dir else "hydra.run.dir")
    inputs = load_inputs(cfg, binning, reuse)
    digest = config_hash(cfg, inputs.model_hash, inputs.data_hash)
    tags = {
        "oracle": str(category_mode(cfg.category.name).oracle).lower(),
        "checkpoint": str(inputs.checkpoint),
        "checkpoint_hash": inputs.model_hash,
        "data_hash": inputs.data_hash,
        "steered_connections": ",".join(sorted(str(c) for c in inputs.spec.connections)),
        "config_hash": digest,
        **(extra_tags or {}),
    }
    name = run_name(cfg, sweep_choices(sweep_dir))
    if cfg.resume:
        previous = _resume(cfg, inputs, tags, name, sweep_dir)
        if previous is not None:
            return previous
    text = config_yaml(cfg)  # rendered once: the run's artifact and the results folder's file
    with FeatureFile(inputs.features) as ff:  # no MLflow run yet: a failure here leaves the store untouched
        signals = _load_or_extract_signals(cfg, inputs, ff)
        eval_idx = split_indices(len(ff), cfg.data.eval_split, cfg.data.split, cfg.data.train_fraction)
        signal_tags = _signal_tags(signals, inputs, eval_idx, cfg.signals)
        plan = plan_from_config(cfg, inputs.spec, inputs.binning, inputs.model_hash, inputs.data_hash)
        loaded = EvaluationInputs(
            inputs.model, ff, eval_idx, signals, inputs.binning, inputs.device, inputs.model_hash, inputs.data_hash
        )
        with cpu_threads(cfg.threads):
            result = evaluate_configuration(plan, loaded, reuse)
    result.tags = {**tags, **signal_tags}

    def log_inputs() -> None:
        log_feature_input(inputs.features, inputs.data_hash, "eval", split=cfg.data.eval_split, n_eval=len(eval_idx))

    recorder.record(
        described_config(cfg, inputs.model.config),  # params: the loaded model's architecture
        result,
        signals,
        digest,
        results_dir or hydra_output_dir(),
        name=name,
        tags=result.tags,
        sweep_dir=sweep_dir,
        config_text=text,
        log_inputs=log_inputs,
    )
    return result


def _resume(
    cfg: RunConfig, inputs: JobInputs, tags: dict[str, str], name: str, sweep_dir: str | Path | None
) -> RunResult | None:
    """``resume=true``: dead runs failed, pending results logged, and a FINISHED run of this config reused."""
    digest = tags["config_hash"]
    fail_dead_runs(tracking_uri(cfg, sweep_dir), cfg.tracking.experiment, digest)
    sync_pending(cache_dir(cfg), digest)
    previous = recorder.previous_result(cfg.tracking.uri, cfg.tracking.experiment, digest, run_name(cfg))
    if previous is not None and sweep_parent(sweep_dir):  # the new sweep's table still gets its row
        resumed = {**tags, "resumed_from": previous.run_id}
        with job_run(described_config(cfg, inputs.model.config), name, resumed, sweep_dir) as run:
            mlflow.log_metrics(previous.metrics)
            log_feature_input(inputs.features, inputs.data_hash, "eval", split=cfg.data.eval_split)
            recorder.log_tables(previous)
        previous.run_id = run.info.run_id
    return previous


def _load_or_extract_signals(cfg: RunConfig, inputs: JobInputs, ff: FeatureFile) -> SignalSet:
    """The run's signals: a given file as it is, else made from ``signals.split`` by ``signals.method`` and
    ``signals.labels`` (cached by content). ``knn`` starts from the plain category means: the evaluation
    picks each clip's neighbours."""
    if cfg.signals.path:
        return load_signals(cfg.signals.path, inputs.binning)
    split = cfg.signals.split
    indices = split_indices(len(ff), split, cfg.data.split, cfg.data.train_fraction)
    if split == "all":
        log.warning("signals averaged over ALL samples, the evaluated ones included: results carry leakage")
    provenance = {
        "checkpoint_hash": inputs.model_hash,
        "data_hash": inputs.data_hash,
        "data_path": str(ff.path),
        "split": split,
        "split_scheme": cfg.data.split,
    }
    recipe = signal_recipe(cfg.signals, cfg.seed, inputs.spec)

    def build() -> SignalSet:
        if not recipe.plain:
            return make_signals(
                inputs.model,
                ff,
                indices,
                inputs.binning,
                recipe,
                inputs.spec,
                batch_size=cfg.batch_size,
                device=inputs.device,
                cache_dir=cache_dir(cfg),
                provenance=provenance,
            )
        return extract_signals(
            inputs.model,
            ff,
            indices,
            inputs.binning,
            batch_size=cfg.batch_size,
            device=inputs.device,
            provenance=provenance,
        )

    signals = cached_signals(
        inputs.model_hash, inputs.data_hash, indices, inputs.binning, cache_dir(cfg), build, recipe=recipe
    )
    fit = signals.metadata.get("fit")
    if isinstance(fit, dict):
        log.info(
            "optimized signals (labels %s): step size %s, step %s; train loss %.5f -> %.5f, held-out %.5f -> %.5f",
            cfg.signals.labels,
            fit.get("step_size"),
            fit.get("step"),
            *(float(fit.get(k, float("nan"))) for k in ("train_loss_start", "train_loss")),
            *(float(fit.get(k, float("nan"))) for k in ("holdout_loss_start", "holdout_loss")),
        )
    return signals


def _signal_tags(
    signals: SignalSet, inputs: JobInputs, eval_idx: np.ndarray, conf: SignalsConf | None = None
) -> dict[str, str]:
    """Tags saying where the signals come from, how they were made (``signals.method``/``labels``; a file's
    as it records them), whether they saw evaluated clips (leakage) and whether another checkpoint made them."""
    provenance = signals.metadata or {}
    leak, foreign = _leakage(provenance, inputs.data_hash, eval_idx)
    other_model = other_checkpoint(signals, inputs.model_hash, inputs.checkpoint)
    if other_model:
        log.warning(
            "the signals were extracted with another checkpoint (%s): they steer from its activations", other_model
        )
    if conf is not None and not conf.path:
        method, labels = str(conf.method), str(conf.labels)
    else:  # a file: what it records (files written before signals.method existed are category means)
        method, labels = str(provenance.get("method", "mean")), str(provenance.get("labels", "observed"))
    return {
        "signals_source": str(signals.source_path or "extracted"),
        "signals_fingerprint": signals.fingerprint(),
        "signals_split": str(provenance.get("split", "file")),
        "signals_method": method,
        "signals_labels": labels,
        "signals_leakage": str(leak).lower(),
        "signals_other_data": str(foreign).lower(),
        "signals_other_checkpoint": str(bool(other_model)).lower(),
    }


def _leakage(provenance: dict, data_hash: str, eval_idx: np.ndarray) -> tuple[bool, bool]:
    """(leakage, signals from another feature file): indices only mean something for the same file."""
    recorded = str(provenance.get("data_hash") or "")
    foreign = not same_feature_file(recorded, data_hash)
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


def summary(cfg: RunConfig, result: RunResult, sweep_dir: str | Path | None = None) -> str:
    """A few human lines for the terminal and the job's log, ending with how to open the run."""
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
        if all(f"{k}_{t}" in m for k in ("ccc_base", "ccc_steered", "mae_base", "mae_steered")):  # Δr misses offsets
            lines.append(
                f"  {'':8s} CCC {m[f'ccc_base_{t}']:.4f} -> {m[f'ccc_steered_{t}']:.4f}   "
                f"MAE {m[f'mae_base_{t}']:.4f} -> {m[f'mae_steered_{t}']:.4f}"
            )
    if toward_target.SHARE in m:  # steered toward one category: did the predictions go there?
        lines.append("  " + toward_target.describe(str(cfg.category.target), m))
    if "category_accuracy" in m and category_mode(cfg.category.name).of_a_category:
        lines.append(f"  {m['category_accuracy']:.1%} of the clips get the signal of their own category")
    lines.append(f"  own feedback moves predictions by {m['feedback_effect']:.4f} on average")
    lines += [f"  {note}" for note in ledger_notes(m, cfg.method.name, float(cfg.strength))]  # the ledger
    if result.tags.get("oracle") == "true":
        lines.append("  oracle: signals chosen from the evaluated samples' own ratings")
    if result.tags.get("signals_leakage") == "true":
        lines.append("  LEAKAGE: the signals were averaged over evaluated samples")
    if result.run_id:
        uri = store_uri(cfg.tracking.uri, sweep_dir)
        lines.append(f"  MLflow run {result.run_id} (experiment {result.experiment_id}) in {uri}")
        lines.append("  " + how_to_open(uri, str(result.experiment_id), result.run_id))
    return "\n".join(lines)
