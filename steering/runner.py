"""One steering evaluation: resolve inputs, choose signals, steer, measure, log to MLflow."""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from steering.binning import Binning
from steering.data import FeatureFile, file_hash, split_indices
from steering.engine import SteeringSpec, select_connections, shared_pass, steer_direct, steer_from_shared
from steering.engine.assign import ORACLE_MODES, assign_signals
from steering.engine.precision import autocast, choose_precision, cpu_threads
from steering.engine.siblings import sweep_strengths
from steering.engine.store import SharedPassStore, shared_key
from steering.metrics import target_metrics
from steering.model import Connection, load_model
from steering.model.lrm import PATHWAYS
from steering.signals import SignalSet, cached_signals, extract_signals, load_signals, save_signals
from steering.tracking import config_hash, configure, find_finished, job_run, sweep_parent

log = logging.getLogger(__name__)
TARGETS = ("valence", "arousal")


@dataclass
class RunResult:
    """What a run produced: metrics, per-sample predictions and where it was logged."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    per_category: pd.DataFrame
    run_id: str = ""
    experiment_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_inputs(cfg: DictConfig) -> tuple[Path, Path]:
    """(checkpoint, feature file): the user's, or the embedded demo's built on first use."""
    checkpoint, features = cfg.model.get("checkpoint"), cfg.data.get("path")
    if checkpoint is None or features is None:
        from steering.demo import ensure_demo

        demo = ensure_demo(cfg.demo, cfg.model.arch)
        checkpoint = checkpoint or demo.checkpoint
        features = features or demo.features
    return Path(checkpoint), Path(features)


def steering_spec(cfg: DictConfig, connections: tuple[Connection, ...]) -> SteeringSpec:
    return SteeringSpec(
        connections=select_connections(connections, cfg.pathway.name, cfg.layer.name),
        method=cfg.method.name,
        strength=float(cfg.strength),
        alpha=float(cfg.alpha),
        priming=bool(cfg.priming),
    )


def run_name(cfg: DictConfig) -> str:
    """Readable name from the choices, e.g. ``9bin-valence-conv4-lrm-s1.5-oracle``."""
    parts = [cfg.binning.name, cfg.pathway.name, cfg.layer.name, cfg.method.name, f"s{cfg.strength:g}"]
    if float(cfg.alpha) != 1.0:
        parts.append(f"a{cfg.alpha:g}")
    category = cfg.category.name + (f":{cfg.category.target}" if cfg.category.name == "fixed" else "")
    parts.append(category)
    if cfg.priming:
        parts.append("primed")
    return "-".join(parts)


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

    return cached_signals(model_hash, data_hash, f"{cfg.data.split}:{split}", binning, cache_dir(cfg), build)


def cache_dir(cfg: DictConfig) -> Path | None:
    directory = cfg.get("cache", {}).get("dir")
    return Path(directory) if directory else None


def _pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def per_category_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Per true category: counts, coverage, base/steered r and MAE, mean shift, per target."""
    rows = []
    for category, group in pred.groupby("category", sort=True):
        row: dict[str, Any] = {"category": category, "n": len(group), "n_steered": int(group["steered"].sum())}
        for t in TARGETS:
            y, base, steered = group[t].to_numpy(), group[f"base_{t}"].to_numpy(), group[f"steered_{t}"].to_numpy()
            row[f"r_base_{t}"] = _pearson_r(base, y)
            row[f"r_steered_{t}"] = _pearson_r(steered, y)
            row[f"mae_base_{t}"] = float(np.mean(np.abs(base - y)))
            row[f"mae_steered_{t}"] = float(np.mean(np.abs(steered - y)))
            row[f"shift_{t}"] = float(np.mean(steered - base))
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(cfg: DictConfig, sweep_dir: str | Path | None = None) -> RunResult:
    """Run one configuration end to end and log it as one MLflow run."""
    device = resolve_device(cfg.device)
    binning = Binning.from_mapping(cfg.binning)
    if cfg.model.get("checkpoint") is None and cfg.model.get("arch") is not None:
        # Validate the choice against the demo architecture before building anything.
        arch_conns = tuple(Connection.parse(c) for c in cfg.model.arch.connections)
        steering_spec(cfg, arch_conns)
    if cfg.forward_passes < 2:
        raise ValueError("forward_passes must be >= 2: steering acts through the feedback of later passes")
    checkpoint, features = resolve_inputs(cfg)
    model = load_model(checkpoint, device=device)
    spec = steering_spec(cfg, model.connections)
    model_hash, data_hash = file_hash(checkpoint), file_hash(features)
    oracle = cfg.category.name in ORACLE_MODES
    tags = {
        "oracle": str(oracle).lower(),
        "checkpoint": str(checkpoint),
        "checkpoint_hash": model_hash,
        "data_hash": data_hash,
        "steered_connections": ",".join(sorted(str(c) for c in spec.connections)),
    }
    digest = config_hash(cfg, model_hash, data_hash)
    tags["config_hash"] = digest
    if cfg.get("resume"):
        previous = _previous_result(cfg, digest)
        if previous is not None:
            if sweep_parent(sweep_dir):  # the new sweep's table still gets its row
                resumed = {**tags, "resumed_from": previous.run_id}
                with job_run(cfg, run_name(cfg), resumed, sweep_dir) as run:
                    mlflow.log_metrics(previous.metrics)
                    _log_tables(previous)
                previous.run_id = run.info.run_id
            return previous
    with FeatureFile(features) as ff, job_run(cfg, run_name(cfg), tags, sweep_dir) as run:
        signals = _load_or_extract_signals(cfg, model, ff, binning, model_hash, data_hash, device)
        eval_idx = split_indices(len(ff), cfg.data.eval_split, cfg.data.split, cfg.data.train_fraction)
        provenance = signals.metadata or {}
        used = set(np.asarray(provenance.get("indices", []), dtype=np.int64).tolist())
        leak = bool(provenance.get("leakage")) or bool(used & set(eval_idx.tolist()))
        mlflow.set_tags(
            {
                "signals_source": str(signals.source_path or "extracted"),
                "signals_fingerprint": signals.fingerprint(),
                "signals_split": str(provenance.get("split", "file")),
                "signals_leakage": str(leak).lower(),
            }
        )
        with cpu_threads(cfg.get("threads")):
            result = _evaluate_loaded(
                cfg, model, ff, eval_idx, spec, signals, binning, device, model_hash, data_hash, sweep_dir
            )
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if v is not None and math.isfinite(v)})
        _log_artifacts(result, signals)
        result.run_id, result.experiment_id = run.info.run_id, run.info.experiment_id
        result.tags = {**tags, "signals_leakage": str(leak).lower()}
    return result


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


def _evaluate_loaded(
    cfg: DictConfig,
    model,
    ff: FeatureFile,
    eval_idx: np.ndarray,
    spec: SteeringSpec,
    signals: SignalSet,
    binning: Binning,
    device: torch.device,
    model_hash: str,
    data_hash: str,
    sweep_dir: str | Path | None = None,
) -> RunResult:
    batch_size = int(cfg.batch_size)
    chunks = [eval_idx[i : i + batch_size] for i in range(0, len(eval_idx), batch_size)]
    key = shared_key(
        model=model_hash,
        data=data_hash,
        indices=indices_hash(eval_idx),
        batch_size=batch_size,
        start_block=spec.first_block,
        device=device.type,
        precision=str(cfg.get("precision", "auto")),
    )
    store = SharedPassStore(key, cache_dir(cfg), device)

    def compute_shared(i: int):
        with autocast(device, precision):
            return shared_pass(model, ff.read(chunks[i]).features.to(device), spec.first_block)

    precision = "fp32"
    if chunks:
        precision = choose_precision(
            device,
            str(cfg.get("precision", "auto")),
            lambda: compute_shared(0).baseline,
            float(cfg.get("precision_tolerance", 1e-3)),
        )

    def shared_for(i: int):
        return store.get(i, lambda: compute_shared(i))

    # Phase 1: configuration-independent work (pass 1, baseline), once per chunk.
    firsts, bases = [], []
    for i in tqdm(range(len(chunks)), desc="shared", unit="chunk", disable=len(chunks) < 4):
        shared = shared_for(i)
        firsts.append({k: v.cpu() for k, v in shared.first.items()})
        bases.append({k: v.cpu() for k, v in shared.baseline.items()})
    first = {k: torch.cat([f[k] for f in firsts]).numpy() for k in firsts[0]}
    base = {t: torch.cat([b[t] for b in bases]).view(-1).numpy() for t in TARGETS}
    ratings = {"valence": ff.valence[eval_idx], "arousal": ff.arousal[eval_idx]}

    # Phase 2: each sample's signal.
    true_cats = binning.categorize(ratings["valence"], ratings["arousal"])
    pred_cats = binning.categorize(first["valence"].reshape(-1), first["arousal"].reshape(-1))
    assignment = assign_signals(
        cfg.category.name,
        table=signals.vectors,
        true_categories=true_cats,
        predicted_categories=pred_cats,
        activations={p: first[f"{p}_128d"] for p in PATHWAYS},
        weights=signals.counts,
        fixed_target=binning.canonical(cfg.category.target) if cfg.category.get("target") else None,
        seed=int(cfg.seed),
    )

    # Phase 3: only the configuration-dependent part, all strengths of the sweep in one forward.
    strengths = [spec.strength] if spec.priming else sorted({spec.strength, *sweep_strengths(sweep_dir)})
    memo_key = (store.key, spec.connections, spec.method, spec.alpha, _assignment_hash(assignment))
    cached = _STEERED_MEMO.get(memo_key, {})
    if spec.strength not in cached:
        with autocast(device, precision):
            cached.update(_steer_chunks(model, ff, chunks, spec, assignment, strengths, shared_for, device))
        _STEERED_MEMO.clear()  # keep only the latest configuration family
        _STEERED_MEMO[memo_key] = cached
    steered = cached[spec.strength]

    m = cfg.metrics
    metrics: dict[str, float] = {}
    for t in TARGETS:
        metrics.update(
            target_metrics(
                ratings[t],
                base[t],
                steered[t],
                prefix_target=t,
                resamples=int(m.bootstrap_resamples),
                confidence=float(m.confidence),
                seed=int(m.seed),
            )
        )
    effect = {t: float(np.mean(np.abs(base[t] - first[t].reshape(-1)))) for t in TARGETS}
    metrics.update(
        coverage=assignment.coverage,
        n_eval=float(len(eval_idx)),
        feedback_effect=float(np.mean(list(effect.values()))),
        **{f"feedback_effect_{t}": v for t, v in effect.items()},
    )
    predictions = pd.DataFrame(
        {
            "audio_name": [ff.audio_names[i] for i in eval_idx],
            "valence": ratings["valence"],
            "arousal": ratings["arousal"],
            "category": true_cats,
            "steered": assignment.mask,
            "base_valence": base["valence"],
            "base_arousal": base["arousal"],
            "steered_valence": steered["valence"],
            "steered_arousal": steered["arousal"],
            "signal": assignment.labels,
        }
    )
    log.info("shared work: %s", store.hits)
    return RunResult(metrics, predictions, per_category_table(predictions))


#: Steered predictions of every strength of the current sweep, for the jobs that follow.
_STEERED_MEMO: dict[tuple, dict[float, dict[str, np.ndarray]]] = {}


def _assignment_hash(assignment) -> str:
    digest = hashlib.sha256(assignment.mask.tobytes())
    for p in PATHWAYS:
        digest.update(np.ascontiguousarray(assignment.vectors[p]).tobytes())
    return digest.hexdigest()[:16]


def _steer_chunks(model, ff, chunks, spec, assignment, strengths, shared_for, device) -> dict[float, dict]:
    """Steered predictions {strength: {target: (N,)}}; results stay on the device until the end."""
    s_tensor = torch.tensor(strengths, dtype=torch.float32, device=device)
    outs: dict[str, list[torch.Tensor]] = {t: [] for t in TARGETS}
    offset = 0
    for i, idx in enumerate(tqdm(chunks, desc="steer", unit="chunk", disable=len(chunks) < 4)):
        rows = slice(offset, offset + len(idx))
        sig = {p: torch.from_numpy(assignment.vectors[p][rows]).to(device) for p in PATHWAYS}
        mask = torch.from_numpy(assignment.mask[rows]).to(device)
        if spec.priming:
            out = steer_direct(model, ff.read(idx).features.to(device), spec, sig, mask)
            out = {t: v.view(1, -1) for t, v in out.items()}
        else:
            out = steer_from_shared(model, shared_for(i), spec, sig, mask, s_tensor)
        for t in TARGETS:
            outs[t].append(out[t])
        offset += len(idx)
    stacked = {t: torch.cat(v, dim=1).float().cpu().numpy() for t, v in outs.items()}
    return {s: {t: stacked[t][j] for t in TARGETS} for j, s in enumerate(strengths)}


def indices_hash(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()[:16]


def _log_tables(result: RunResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in (("predictions.csv", result.predictions), ("per_category.csv", result.per_category)):
            frame.to_csv(Path(tmp) / name, index=False)
            mlflow.log_artifact(str(Path(tmp) / name))


def _log_artifacts(result: RunResult, signals: SignalSet) -> None:
    _log_tables(result)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_signals(signals, Path(tmp) / f"signals_{signals.binning_name}.json")
        mlflow.log_artifact(str(path))


def summary(cfg: DictConfig, result: RunResult) -> str:
    """A few human lines for the terminal."""
    m = result.metrics
    lines = [f"steering run {run_name(cfg)}  (n={int(m['n_eval'])}, coverage {m['coverage']:.1%})"]
    for t in TARGETS:
        lines.append(
            f"  {t:8s} r {m[f'r_base_{t}']:.4f} -> {m[f'r_steered_{t}']:.4f}   "
            f"dr {m[f'dr_{t}']:+.4f} [{m[f'dr_{t}_ci_low']:+.4f}, {m[f'dr_{t}_ci_high']:+.4f}]  "
            f"p={m[f'dr_{t}_p']:.3g}"
        )
    lines.append(f"  own feedback moves predictions by {m['feedback_effect']:.4f} on average")
    if result.tags.get("oracle") == "true":
        lines.append("  oracle: signals chosen from the evaluated samples' own ratings")
    if result.tags.get("signals_leakage") == "true":
        lines.append("  LEAKAGE: the signals were averaged over evaluated samples")
    if result.run_id:
        uri = mlflow.get_tracking_uri()
        lines.append(f"  MLflow run {result.run_id} (experiment {result.experiment_id}) in {uri}")
    return "\n".join(lines)
