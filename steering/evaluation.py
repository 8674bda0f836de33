"""Evaluating one steering configuration on loaded inputs: shared work, signals per sample, metrics.

Three phases: configuration-independent work once per chunk (pass 1, baseline, the first steered
block's output; memory and on-disk cache), each sample's signal (several draws for the random
controls), then only the configuration-dependent part, for every strength of the current sweep
and every draw in one batched forward. Sibling jobs of a sweep read their strength from an
explicit :class:`~steering.engine.reuse.SweepReuse` keyed on the whole configuration except strength.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from steering.data import FeatureFile, indices_hash
from steering.data.binning import Binning
from steering.engine import SteeringSpec, steer_direct
from steering.engine.assign import MULTI_DRAW_MODES, Assignment, GaussianReference, assign_draws
from steering.engine.chunked import plan_chunks, shared_bytes_per_clip, shared_chunk, steer_chunk
from steering.engine.core import TARGETS, SharedPass
from steering.engine.hardware import autocast, choose_precision
from steering.engine.reuse import SweepReuse, reuse_key
from steering.engine.store import SharedPassStore, shared_key
from steering.model.lrm import PATHWAYS
from steering.signals import SignalSet
from steering.signals.reference import reference_activations, reference_indices
from steering.stats.metrics import pearson
from steering.stats.run_metrics import run_metrics
from steering.util.hashing import parts_digest

log = logging.getLogger(__name__)


def cache_dir(cfg: DictConfig) -> Path | None:
    directory = cfg.get("cache", {}).get("dir")
    return Path(directory) if directory else None


@dataclass
class RunResult:
    """What a run produced: metrics, per-sample predictions and where it was logged."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    per_category: pd.DataFrame
    run_id: str = ""
    experiment_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)


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


def predicted_categories(cfg: DictConfig, binning: Binning, first: dict, base: dict) -> np.ndarray:
    """Each clip's category from the model's own prediction: ``final`` (baseline, default) or ``pass1``."""
    source = str(cfg.category.get("source", "final"))
    pred = base if source == "final" else {t: first[t].reshape(-1) for t in TARGETS}
    return binning.categorize(pred["valence"], pred["arousal"])


def _warn_dominant(mode: str, labels: np.ndarray, limit: float = 0.9) -> None:
    if mode not in ("oracle", "predicted", "shuffled") or not labels.size:
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
    reuse: SweepReuse | None = None,
) -> RunResult:
    """Baseline and steered predictions of the ``eval_idx`` clips, and every metric of the run.

    ``reuse`` (one per sweep) lets the jobs of a sweep that differ only in strength share one
    batched forward; without it only this run's strength is computed.
    """
    batch_size = int(cfg.batch_size)
    per_clip = shared_bytes_per_clip(model, spec.first_block, ff.frames)
    chunks = plan_chunks(len(eval_idx), batch_size, per_clip)
    key = shared_key(
        model=model_hash,
        data=data_hash,
        indices=indices_hash(eval_idx),
        batch_size=batch_size,
        chunks=[(c.start, c.stop) for c in chunks],
        start_block=spec.first_block,
        device=device.type,
        precision=str(cfg.get("precision", "auto")),
    )
    store = SharedPassStore(key, cache_dir(cfg), device, memory=reuse.memory if reuse is not None else None)

    def features_of(rows: slice) -> torch.Tensor:
        return ff.read(eval_idx[rows]).features.to(device)

    def compute_shared(i: int, rows: slice | None = None):
        with autocast(device, precision):
            return shared_chunk(model, features_of, rows or chunks[i], spec.first_block, batch_size)

    precision = "fp32"
    if chunks:
        probe_rows = slice(0, min(batch_size, len(eval_idx)))
        precision = choose_precision(
            device,
            str(cfg.get("precision", "auto")),
            lambda: compute_shared(0, probe_rows).baseline,
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

    # Phase 2: each sample's signal (several draws for the random controls).
    mode = str(cfg.category.name)
    true_cats = binning.categorize(ratings["valence"], ratings["arousal"])
    reference = None
    if mode == "random":
        ref_idx = reference_indices(
            signals,
            ff,
            data_hash,
            split=str(cfg.signals.split),
            scheme=str(cfg.data.split),
            train_fraction=float(cfg.data.train_fraction),
            exclude=eval_idx,
        )
        acts = reference_activations(
            model,
            ff,
            ref_idx,
            model_hash=model_hash,
            data_hash=data_hash,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir(cfg),
        )
        reference = GaussianReference.from_activations(acts)
    assignments = assign_draws(
        mode,
        draws=int(cfg.category.get("draws", 1)),
        seed=int(cfg.seed),
        table=signals.vectors,
        true_categories=true_cats,
        predicted_categories=predicted_categories(cfg, binning, first, base) if mode == "predicted" else true_cats,
        reference=reference,
        grand_mean={p: signals.grand_mean(p) for p in PATHWAYS} if mode == "mean" else None,
        fixed_target=binning.canonical(cfg.category.target) if cfg.category.get("target") else None,
    )
    _warn_dominant(mode, assignments[0].labels)

    # Phase 3: only the configuration-dependent part, all strengths and draws in one forward.
    family = reuse_key(
        cfg, model_hash, data_hash, signals.fingerprint(), store.key, precision, _assignment_hash(assignments)
    )
    steered = reuse.get(family, spec.strength) if reuse is not None else None
    if steered is None:
        strengths = reuse.strengths_for(spec.strength) if reuse is not None else [float(spec.strength)]
        if spec.priming:
            strengths = [float(spec.strength)]  # priming changes pass 1: no shared work to batch over
        with autocast(device, precision):
            by_strength = _steer_chunks(
                model, features_of, chunks, spec, assignments, strengths, shared_for, device, batch_size
            )
        if reuse is not None:
            reuse.put(family, by_strength)
        steered = by_strength[float(spec.strength)]

    masks = np.stack([a.mask for a in assignments])
    m = cfg.metrics
    metrics = run_metrics(
        ratings,
        base,
        steered,
        masks,
        resamples=int(m.bootstrap_resamples),
        confidence=float(m.confidence),
        seed=int(m.seed),
    )
    effect = {t: float(np.mean(np.abs(base[t] - first[t].reshape(-1)))) for t in TARGETS}
    metrics.update(
        coverage=float(np.mean([a.coverage for a in assignments])),
        category_accuracy=float(np.mean([a.category_accuracy(true_cats) for a in assignments])),
        n_eval=float(len(eval_idx)),
        feedback_effect=float(np.mean(list(effect.values()))),
        **{f"feedback_effect_{t}": v for t, v in effect.items()},
    )
    if mode in MULTI_DRAW_MODES:
        metrics["draws"] = float(len(assignments))
    predictions = pd.DataFrame(
        {
            "audio_name": [ff.audio_names[i] for i in eval_idx],
            "valence": ratings["valence"],
            "arousal": ratings["arousal"],
            "category": true_cats,
            "steered": assignments[0].mask,
            "base_valence": base["valence"],
            "base_arousal": base["arousal"],
            "steered_valence": steered["valence"][0],
            "steered_arousal": steered["arousal"][0],
            "signal": assignments[0].labels,
        }
    )
    if mode in MULTI_DRAW_MODES:
        draw_columns = {f"steered_{t}_draw{k}": steered[t][k] for k in range(len(assignments)) for t in TARGETS}
        predictions = pd.concat([predictions, pd.DataFrame(draw_columns)], axis=1)
    log.info("shared work: %s", store.hits)
    return RunResult(metrics, predictions, _draw_mean_per_category(predictions, steered, masks))


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
    model, features_of, chunks, spec, assignments, strengths, shared_for, device, batch_size
) -> dict[float, dict[str, np.ndarray]]:
    """Steered predictions {strength: {target: (D, N)}}; results stay on the device until the end."""
    s_tensor = torch.tensor(strengths, dtype=torch.float32, device=device)
    outs: dict[str, list[torch.Tensor]] = {t: [] for t in TARGETS}
    for i, rows in enumerate(tqdm(chunks, desc="steer", unit="chunk", disable=len(chunks) < 4)):
        sig = {p: torch.stack([torch.from_numpy(a.vectors[p][rows]) for a in assignments]).to(device) for p in PATHWAYS}
        mask = torch.stack([torch.from_numpy(a.mask[rows]) for a in assignments]).to(device)
        if spec.priming:
            feats = features_of(rows)
            per_draw = [
                steer_direct(model, feats, spec, {p: v[k] for p, v in sig.items()}, mask[k])
                for k in range(len(assignments))
            ]
            out = {t: torch.stack([o[t] for o in per_draw]).unsqueeze(0) for t in TARGETS}
        else:
            out = _steer_draws(model, shared_for(i), spec, sig, mask, s_tensor, batch_size)
        for t in TARGETS:
            outs[t].append(out[t])
    stacked = {t: torch.cat(v, dim=2).float().cpu().numpy() for t, v in outs.items()}
    return {s: {t: stacked[t][j] for t in TARGETS} for j, s in enumerate(strengths)}
