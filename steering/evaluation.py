"""Evaluating one steering configuration: typed plan in, predictions and metrics out.

No MLflow, no Hydra: :func:`plan_from_config` reads the typed run config once into an
:class:`EvaluationPlan`, and :func:`evaluate_configuration` computes on loaded inputs. Three phases:
configuration-independent work once per chunk (pass 1, baseline, the first steered block's output;
memory and on-disk cache), each sample's signal (several draws for the random controls), then only
the configuration-dependent part, for every strength of the current sweep and every draw in one
batched forward. Sibling jobs of a sweep read their strength from an explicit
:class:`~steering.engine.reuse.SweepReuse` keyed on the whole configuration except strength.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from steering.data import FeatureFile, indices_hash
from steering.data.binning import Binning
from steering.data.splits import split_indices
from steering.engine import SteeringSpec, steer_direct
from steering.engine.categories import (
    DRAWS_FILE,
    Assignment,
    GaussianReference,
    assign_draws,
    category_mode,
    draw_vectors,
)
from steering.engine.chunked import plan_chunks, shared_bytes_per_clip, shared_chunk, steer_chunk
from steering.engine.core import SharedPass
from steering.engine.ledger import LEDGER_FILE, ledger_metrics, run_ledger
from steering.engine.reuse import SweepReuse, family_key, reuse_key
from steering.engine.store import ChunkMemory, SharedPassStore, shared_key
from steering.signals import SignalSet
from steering.signals.knn import knn_signals
from steering.signals.reference import reference_activations, reference_indices
from steering.stats.metrics import pearson
from steering.stats.run_metrics import run_metrics
from steering.stats.toward_target import toward_target_metrics
from steering.util.hardware import autocast, choose_precision
from steering.util.hashing import parts_digest
from steering.vocab import PATHWAYS, TARGETS

if TYPE_CHECKING:
    from steering.config.schema import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationPlan:
    """What one evaluation computes, read once from the typed run config by :func:`plan_from_config`.

    ``config_key``: the configuration's sibling-reuse key (every field but strength, and the input
    files), so jobs that differ only in strength can share one forward.
    """

    spec: SteeringSpec
    category: str
    draws: int = 1
    source: str = "final"
    fixed_target: str | None = None
    seed: int = 0
    batch_size: int = 16
    precision: str = "auto"
    precision_tolerance: float = 1e-3
    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    metrics_seed: int = 0
    signals_split: str = "train"
    signals_method: str = "mean"
    knn_k: int = 10
    split_scheme: str = "threeway"
    train_fraction: float = 0.7
    cache_dir: Path | None = None
    config_key: str = ""


@dataclass(frozen=True)
class EvaluationInputs:
    """The loaded inputs of one evaluation: model, feature file, evaluated rows, signals, binning."""

    model: Any
    ff: FeatureFile
    eval_idx: np.ndarray
    signals: SignalSet
    binning: Binning
    device: torch.device
    model_hash: str
    data_hash: str


@dataclass
class RunResult:
    """What a run produced: metrics, per-sample predictions and where it was logged."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    per_category: pd.DataFrame
    run_id: str = ""
    experiment_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # file name -> arrays (random draws)
    documents: dict[str, dict] = field(default_factory=dict)  # file name -> JSON document (the ledger)


def cache_dir(cfg: RunConfig) -> Path | None:
    """``cache.dir`` as a path (None when unset)."""
    directory = cfg.cache.dir
    return Path(directory) if directory else None


def plan_from_config(
    cfg: RunConfig, spec: SteeringSpec, binning: Binning, model_hash: str, data_hash: str
) -> EvaluationPlan:
    """The evaluation plan of a typed run config (the only place the evaluation reads the config)."""
    target = cfg.category.target
    return EvaluationPlan(
        spec=spec,
        category=str(cfg.category.name),
        draws=int(cfg.category.draws),
        source=str(cfg.category.source),
        fixed_target=binning.canonical(target) if target else None,
        seed=int(cfg.seed),
        batch_size=int(cfg.batch_size),
        precision=str(cfg.precision),
        precision_tolerance=float(cfg.precision_tolerance),
        bootstrap_resamples=int(cfg.metrics.bootstrap_resamples),
        confidence=float(cfg.metrics.confidence),
        metrics_seed=int(cfg.metrics.seed),
        signals_split=str(cfg.signals.split),
        signals_method=str(cfg.signals.method),
        knn_k=int(cfg.signals.k),
        split_scheme=str(cfg.data.split),
        train_fraction=float(cfg.data.train_fraction),
        cache_dir=cache_dir(cfg),
        config_key=reuse_key(cfg, model_hash, data_hash),
    )


def per_category_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Per true category: counts, coverage, base/steered r and MAE, mean shift, per target (one draw)."""
    rows = []
    for category, group in pred.groupby("category", sort=True):
        row: dict[str, Any] = {"category": category, "n": len(group), "n_steered": int(group["steered"].sum())}
        for t in TARGETS:
            y, base, steered = group[t].to_numpy(), group[f"base_{t}"].to_numpy(), group[f"steered_{t}"].to_numpy()
            # r over fewer than 3 clips says nothing (two points always give +-1)
            row[f"r_base_{t}"] = pearson(base, y) if len(y) >= 3 else math.nan
            row[f"r_steered_{t}"] = pearson(steered, y) if len(y) >= 3 else math.nan
            row[f"mae_base_{t}"] = float(np.mean(np.abs(base - y)))
            row[f"mae_steered_{t}"] = float(np.mean(np.abs(steered - y)))
            row[f"shift_{t}"] = float(np.mean(steered - base))
        rows.append(row)
    return pd.DataFrame(rows)


def _draw_mean_per_category(pred: pd.DataFrame, steered: dict[str, np.ndarray], masks: np.ndarray) -> pd.DataFrame:
    """The per-category table averaged over draws (each draw's own predictions and mask)."""
    tables = []
    for k in range(masks.shape[0]):
        draw = pred.assign(steered=masks[k], **{f"steered_{t}": steered[t][k] for t in TARGETS})
        tables.append(per_category_table(draw))
    if len(tables) == 1:
        return tables[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a category's r is nan in every draw
        return pd.concat(tables).groupby("category", sort=True).mean().reset_index()


def predicted_categories(source: str, binning: Binning, first: dict, base: dict) -> np.ndarray:
    """Each clip's category from the model's own prediction: ``final`` (baseline, default) or ``pass1``."""
    pred = base if source == "final" else {t: first[t].reshape(-1) for t in TARGETS}
    return binning.categorize(pred["valence"], pred["arousal"])


def _warn_dominant(mode: str, labels: np.ndarray, limit: float = 0.9) -> None:
    if not category_mode(mode).per_sample or not labels.size:
        return
    names, counts = np.unique(labels.astype(str), return_counts=True)
    top = int(np.argmax(counts))
    share = counts[top] / labels.size
    if share > limit and names[top]:
        log.warning(
            "category=%s: %s takes %.0f%% of the %d evaluated clips; the condition is close to fixed:%s",
            mode,
            names[top],
            100 * share,
            labels.size,
            names[top],
        )


def evaluate_configuration(
    plan: EvaluationPlan, inputs: EvaluationInputs, reuse: SweepReuse | None = None
) -> RunResult:
    """Baseline and steered predictions of the evaluated clips, and every metric of the run.

    ``reuse`` (one per sweep) lets the jobs of a sweep that differ only in strength share one
    batched forward; without it only this run's strength is computed.
    """
    work = shared_work(plan, inputs, reuse.memory if reuse is not None else None)
    true_cats = inputs.binning.categorize(work.ratings["valence"], work.ratings["arousal"])
    assignments = assign(plan, inputs, work, true_cats)
    steered = steered_predictions(plan, inputs, work, assignments, reuse)
    result = run_result(plan, inputs, work, assignments, true_cats, steered)
    log.info("shared work: %s", work.store.hits)
    return result


# --------------------------------------------------------------------------- phase 1: shared work
@dataclass
class SharedWork:
    """Configuration-independent work of the evaluated clips: pass 1 and baseline, per chunk and joined."""

    chunks: list[slice]
    store: SharedPassStore
    precision: str
    features_of: Callable[[slice], torch.Tensor]
    shared_for: Callable[[int], SharedPass]
    first: dict[str, np.ndarray]
    base: dict[str, np.ndarray]
    ratings: dict[str, np.ndarray]


def shared_work(plan: EvaluationPlan, inputs: EvaluationInputs, memory: ChunkMemory | None = None) -> SharedWork:
    """Chunks, precision and the shared pass of every chunk (``memory`` and disk cache), once per chunk."""
    model, ff, eval_idx, device = inputs.model, inputs.ff, inputs.eval_idx, inputs.device
    batch_size, first_block = plan.batch_size, plan.spec.first_block
    chunks = plan_chunks(len(eval_idx), batch_size, shared_bytes_per_clip(model, first_block, ff.frames))
    key = shared_key(
        model=inputs.model_hash,
        data=inputs.data_hash,
        indices=indices_hash(eval_idx),
        batch_size=batch_size,
        chunks=[(c.start, c.stop) for c in chunks],
        start_block=first_block,
        device=device.type,
        precision=plan.precision,
    )
    store = SharedPassStore(key, plan.cache_dir, device, memory=memory)

    def features_of(rows: slice) -> torch.Tensor:
        return ff.read(eval_idx[rows]).features.to(device)

    def compute(rows: slice, precision: str) -> SharedPass:
        with autocast(device, precision):
            return shared_chunk(model, features_of, rows, first_block, batch_size)

    precision = "fp32"
    if chunks:
        probe = slice(0, min(batch_size, len(eval_idx)))
        precision = choose_precision(
            device, plan.precision, lambda: compute(probe, "fp32").baseline, plan.precision_tolerance
        )

    def shared_for(i: int) -> SharedPass:
        return store.get(i, lambda: compute(chunks[i], precision))

    firsts, bases = [], []
    for i in tqdm(range(len(chunks)), desc="shared", unit="chunk", disable=len(chunks) < 4):
        shared = shared_for(i)
        firsts.append({k: v.cpu() for k, v in shared.first.items()})
        bases.append({k: v.cpu() for k, v in shared.baseline.items()})
    first = {k: torch.cat([f[k] for f in firsts]).numpy() for k in firsts[0]}
    base = {t: torch.cat([b[t] for b in bases]).view(-1).numpy() for t in TARGETS}
    ratings = {"valence": ff.valence[eval_idx], "arousal": ff.arousal[eval_idx]}
    return SharedWork(chunks, store, precision, features_of, shared_for, first, base, ratings)


# --------------------------------------------------------------------------- phase 2: signals per sample
def assign(plan: EvaluationPlan, inputs: EvaluationInputs, work: SharedWork, true_cats: np.ndarray) -> list[Assignment]:
    """Each sample's signal per draw, by the plan's category mode (what it needs, it declares)."""
    mode, signals, binning = plan.category, inputs.signals, inputs.binning
    needs = category_mode(mode).needs
    assignments = assign_draws(
        mode,
        draws=plan.draws,
        seed=plan.seed,
        table=signals.vectors,
        true_categories=true_cats,
        predicted_categories=(
            predicted_categories(plan.source, binning, work.first, work.base) if "predicted" in needs else None
        ),
        reference=_random_reference(plan, inputs) if "reference" in needs else None,
        grand_mean={p: signals.grand_mean(p) for p in PATHWAYS} if "grand_mean" in needs else None,
        fixed_target=plan.fixed_target,
    )
    if plan.signals_method == "knn":
        split = _split_activations(plan, inputs, "signals.method=knn")
        near = knn_signals({p: work.first[f"{p}_128d"] for p in PATHWAYS}, split, plan.knn_k)
        assignments = [_with_knn(a, near) for a in assignments]
    _warn_dominant(mode, assignments[0].labels)
    return assignments


def _with_knn(chosen: Assignment, near: dict[str, np.ndarray]) -> Assignment:
    """``signals.method=knn``: the mode's mask kept, each steered clip's vectors its k nearest split clips' mean.

    ``near`` comes from the evaluated clips' own pass-1 activations (``work.first``) against the
    signal split's (evaluated clips left out, :mod:`steering.signals.knn`): no rating is read.
    """
    mask = chosen.mask
    vectors = {p: np.where(mask[:, None], near[p], 0.0).astype(np.float32) for p in PATHWAYS}
    labels = np.where(mask, "knn", "").astype(object)
    return Assignment(labels, vectors, mask, chosen.oracle)


def _random_reference(plan: EvaluationPlan, inputs: EvaluationInputs) -> GaussianReference:
    """The random control's reference: activations of clips from the signals' split, none evaluated."""
    return GaussianReference.from_activations(_split_activations(plan, inputs, "the random control"))


def _split_activations(plan: EvaluationPlan, inputs: EvaluationInputs, purpose: str) -> dict[str, np.ndarray]:
    """Pass-1 activations {pathway: (M, 128)} of the signals' split, evaluated clips left out (cached)."""
    ref_idx = reference_indices(
        inputs.signals,
        inputs.ff,
        inputs.data_hash,
        split=plan.signals_split,
        scheme=plan.split_scheme,
        train_fraction=plan.train_fraction,
        exclude=inputs.eval_idx,
        purpose=purpose,
    )
    return reference_activations(
        inputs.model,
        inputs.ff,
        ref_idx,
        model_hash=inputs.model_hash,
        data_hash=inputs.data_hash,
        batch_size=plan.batch_size,
        device=inputs.device,
        cache_dir=plan.cache_dir,
    )


def _assignment_hash(assignments: list[Assignment]) -> str:
    parts = (
        part
        for a in assignments
        for part in (
            a.mask.tobytes(),
            "|".join(map(str, a.labels)),
            *(np.ascontiguousarray(a.vectors[p]).tobytes() for p in PATHWAYS),
        )
    )
    return parts_digest(parts, 16)


# --------------------------------------------------------------------------- phase 3: steering
def steered_predictions(
    plan: EvaluationPlan,
    inputs: EvaluationInputs,
    work: SharedWork,
    assignments: list[Assignment],
    reuse: SweepReuse | None,
) -> dict[str, np.ndarray]:
    """{target: (draws, N)} at the plan's strength: from a sibling job, else one forward for all strengths."""
    spec = plan.spec
    family = family_key(
        plan.config_key, inputs.signals.fingerprint(), work.store.key, work.precision, _assignment_hash(assignments)
    )
    steered = reuse.get(family, spec.strength) if reuse is not None else None
    if steered is not None:
        return steered
    strengths = reuse.strengths_for(spec.strength) if reuse is not None else [float(spec.strength)]
    if spec.priming:
        strengths = [float(spec.strength)]  # priming changes pass 1: no shared work to batch over
    with autocast(inputs.device, work.precision):
        by_strength = _steer_chunks(inputs.model, work, spec, assignments, strengths, inputs.device, plan.batch_size)
    if reuse is not None:
        reuse.put(family, by_strength)
    return by_strength[float(spec.strength)]


def _steer_draws(
    model, shared: SharedPass, spec, signals: dict[str, torch.Tensor], masks: torch.Tensor, strengths, batch_size
) -> dict[str, torch.Tensor]:
    """{target: (S, D, n)} for D draws of signals (D, n, 128) and masks (D, n) on one chunk's shared work.

    On the pooled (last-block) path the draws are stacked along the batch, so one small batched
    forward serves every draw and strength; otherwise each draw reuses the chunk's shared work.
    """
    d, n = masks.shape
    if d > 1 and shared.pooled:
        tiled = SharedPass.concat([shared] * d)
        flat = {p: v.reshape(d * n, -1) for p, v in signals.items()}
        out = steer_chunk(model, tiled, spec, flat, masks.reshape(-1), strengths, batch_size)
        return {t: v.view(v.shape[0], d, n) for t, v in out.items()}
    outs = [
        steer_chunk(model, shared, spec, {p: v[k] for p, v in signals.items()}, masks[k], strengths, batch_size)
        for k in range(d)
    ]
    return {t: torch.stack([o[t] for o in outs], dim=1) for t in TARGETS}


def _steer_chunks(
    model, work: SharedWork, spec, assignments, strengths, device, batch_size
) -> dict[float, dict[str, np.ndarray]]:
    """Steered predictions {strength: {target: (D, N)}}; results stay on the device until the end."""
    s_tensor = torch.tensor(strengths, dtype=torch.float32, device=device)
    outs: dict[str, list[torch.Tensor]] = {t: [] for t in TARGETS}
    chunks = work.chunks
    for i, rows in enumerate(tqdm(chunks, desc="steer", unit="chunk", disable=len(chunks) < 4)):
        sig = {p: torch.stack([torch.from_numpy(a.vectors[p][rows]) for a in assignments]).to(device) for p in PATHWAYS}
        mask = torch.stack([torch.from_numpy(a.mask[rows]) for a in assignments]).to(device)
        if spec.priming:
            feats = work.features_of(rows)
            per_draw = [
                steer_direct(model, feats, spec, {p: v[k] for p, v in sig.items()}, mask[k])
                for k in range(len(assignments))
            ]
            out = {t: torch.stack([o[t] for o in per_draw]).unsqueeze(0) for t in TARGETS}
        else:
            out = _steer_draws(model, work.shared_for(i), spec, sig, mask, s_tensor, batch_size)
        for t in TARGETS:
            outs[t].append(out[t])
    stacked = {t: torch.cat(v, dim=2).float().cpu().numpy() for t, v in outs.items()}
    return {s: {t: stacked[t][j] for t in TARGETS} for j, s in enumerate(strengths)}


# --------------------------------------------------------------------------- metrics and tables
def target_centre(plan: EvaluationPlan, inputs: EvaluationInputs) -> dict[str, float]:
    """The fixed target's rating centre: mean ratings of its clips in ``signals.split``, evaluated clips left out.

    The signals' own clips define the category, so its centre never reads an evaluated clip's
    rating (with ``signals.split=all`` the evaluated clips are left out); nan without such clips.
    """
    ff = inputs.ff
    split = split_indices(len(ff), plan.signals_split, plan.split_scheme, plan.train_fraction)
    idx = np.setdiff1d(split, np.asarray(inputs.eval_idx, dtype=np.int64))
    own = idx[inputs.binning.categorize(ff.valence[idx], ff.arousal[idx]) == plan.fixed_target]
    if not own.size:
        log.warning("no clip of %s in split %r: its centre is undefined", plan.fixed_target, plan.signals_split)
        return {t: math.nan for t in TARGETS}
    return {"valence": float(np.mean(ff.valence[own])), "arousal": float(np.mean(ff.arousal[own]))}


def toward_target(
    plan: EvaluationPlan, inputs: EvaluationInputs, base: dict[str, np.ndarray], steered: dict[str, np.ndarray]
) -> dict[str, float]:
    """``toward_target_*`` and the centroids of the steering map (``steering.stats.toward_target``)."""
    return toward_target_metrics(
        target_centre(plan, inputs),
        base,
        steered,
        resamples=plan.bootstrap_resamples,
        confidence=plan.confidence,
        seed=plan.metrics_seed,
    )


def run_result(
    plan: EvaluationPlan,
    inputs: EvaluationInputs,
    work: SharedWork,
    assignments: list[Assignment],
    true_cats: np.ndarray,
    steered: dict[str, np.ndarray],
) -> RunResult:
    """Every metric of the run, predictions.csv (one column pair per draw for the random controls), per category."""
    base, first, multi = work.base, work.first, category_mode(plan.category).multi_draw
    masks = np.stack([a.mask for a in assignments])
    metrics = run_metrics(
        work.ratings,
        base,
        steered,
        masks,
        resamples=plan.bootstrap_resamples,
        confidence=plan.confidence,
        seed=plan.metrics_seed,
    )
    effect = {t: float(np.mean(np.abs(base[t] - first[t].reshape(-1)))) for t in TARGETS}
    metrics.update(
        coverage=float(np.mean([a.coverage for a in assignments])),
        category_accuracy=float(np.mean([a.category_accuracy(true_cats) for a in assignments])),
        n_eval=float(len(inputs.eval_idx)),
        feedback_effect=float(np.mean(list(effect.values()))),
        **{f"feedback_effect_{t}": v for t, v in effect.items()},
    )
    if multi:
        metrics["draws"] = float(len(assignments))
    ledger = intervention_ledger(plan, inputs, work, assignments, steered)
    metrics.update(ledger_metrics(ledger))
    if "target" in category_mode(plan.category).needs:  # every clip steered toward one category
        metrics.update(toward_target(plan, inputs, base, {t: steered[t][0] for t in TARGETS}))
    predictions = pd.DataFrame(
        {
            "audio_name": [inputs.ff.audio_names[i] for i in inputs.eval_idx],
            "valence": work.ratings["valence"],
            "arousal": work.ratings["arousal"],
            "category": true_cats,
            "steered": assignments[0].mask,
            "base_valence": base["valence"],
            "base_arousal": base["arousal"],
            "steered_valence": steered["valence"][0],
            "steered_arousal": steered["arousal"][0],
            "signal": assignments[0].labels,
        }
    )
    if multi:
        draw_columns = {f"steered_{t}_draw{k}": steered[t][k] for k in range(len(assignments)) for t in TARGETS}
        predictions = pd.concat([predictions, pd.DataFrame(draw_columns)], axis=1)
    result = RunResult(metrics, predictions, _draw_mean_per_category(predictions, steered, masks))
    result.documents[LEDGER_FILE] = ledger
    if "reference" in category_mode(plan.category).needs:  # drawn vectors: kept with the run
        result.arrays[DRAWS_FILE] = {"audio_name": predictions["audio_name"].to_numpy(str), **draw_vectors(assignments)}
    return result


def intervention_ledger(
    plan: EvaluationPlan,
    inputs: EvaluationInputs,
    work: SharedWork,
    assignments: list[Assignment],
    steered: dict[str, np.ndarray],
) -> dict:
    """The run's intervention ledger (steering.engine.ledger): ``took_effect`` from every draw's
    predictions; the stages, gains and changes on a probe of the first ``batch_size`` steered clips
    of the first draw."""
    rows = np.flatnonzero(assignments[0].mask)[: plan.batch_size]
    probe = None
    if rows.size:
        features = inputs.ff.read(inputs.eval_idx[rows]).features.to(inputs.device)
        vectors = assignments[0].vectors
        signals = {p: torch.as_tensor(vectors[p][rows], dtype=torch.float32, device=inputs.device) for p in PATHWAYS}
        probe = (features, signals)
    return run_ledger(inputs.model, plan.spec, probe, work.base, steered, work.precision)
