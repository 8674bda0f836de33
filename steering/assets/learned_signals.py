"""Signals made by a recipe other than plain category means: the label controls and fitted signals.

``signals.labels=permuted|none`` change which labels group the clips (steering.signals.labels);
``signals.method=optimized`` fits the vectors through the run's steering configuration
(steering.signals.optimize) on the engine's shared work of the signal split's clips. The steering
engine and the signals are sibling layers, so the two meet here. Everything is written as a
:class:`SignalSet` in the users' JSON layout, with its provenance in ``metadata`` and the recipe in
``generation_config`` (docs/signals.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steering.config.schema import OptimizeConf
from steering.data import FeatureFile, indices_hash
from steering.data.binning import Binning
from steering.engine.chunked import plan_chunks, shared_bytes_per_clip, shared_chunk
from steering.engine.core import steered_from_shared
from steering.engine.spec import SteeringSpec
from steering.engine.store import SharedPassStore, shared_key
from steering.errors import ConfigError
from steering.signals.diagnostics import signal_diagnostics
from steering.signals.labels import ALL_CLIPS, SignalLabels, holdout_split, signal_labels
from steering.signals.optimize import FitProblem, FitResult, Predict, fit_vectors
from steering.signals.recipe import SignalRecipe
from steering.signals.reference import reference_activations
from steering.signals.signalset import PATHWAYS, SignalSet
from steering.util.hardware import cpu_threads
from steering.vocab import TARGETS

log = logging.getLogger(__name__)


def signal_recipe(signals_conf: Any, seed: int, spec: SteeringSpec) -> SignalRecipe:
    """The recipe of a run's ``signals`` section (``signals.method``, ``labels``, ``optimize``) and ``seed``."""
    opt = signals_conf.optimize
    return SignalRecipe(
        method=str(signals_conf.method),
        labels=str(signals_conf.labels),
        seed=int(seed),
        optimize=OptimizeConf(
            steps=int(opt.steps),
            step_sizes=[float(s) for s in opt.step_sizes],
            patience=int(opt.patience),
            holdout=float(opt.holdout),
        ),
        steering={
            "method": spec.method,
            "connections": sorted(str(c) for c in spec.connections),
            "strength": float(spec.strength),
            "alpha": float(spec.alpha),
        },
    )


@dataclass(frozen=True)
class Groups:
    """The groups that get a signal: names, each kept clip's group number, and the counts of all."""

    names: list[str]
    number: np.ndarray  # (N,) group number per clip of the labels, -1 where the group gets no signal
    counts: dict[str, int]
    dropped: list[str]

    @property
    def kept(self) -> np.ndarray:
        return self.number >= 0


def signal_groups(labels: SignalLabels, binning: Binning) -> Groups:
    """Categories with at least ``binning.min_samples`` clips (``none``: the one group of all clips)."""
    if labels.mode == "none":
        return Groups([ALL_CLIPS], np.zeros(labels.indices.size, dtype=np.int64), {ALL_CLIPS: labels.indices.size}, [])
    number = np.full(labels.indices.size, -1, dtype=np.int64)
    names, counts, dropped = [], {}, []
    for cat in binning.categories:
        mask = labels.groups == cat
        counts[cat] = int(mask.sum())
        if counts[cat] and counts[cat] < binning.min_samples:
            dropped.append(cat)
        elif counts[cat]:
            number[mask] = len(names)
            names.append(cat)
    if dropped:
        log.warning("no signal for %s: fewer than %d samples", ", ".join(dropped), binning.min_samples)
    if not names:
        raise ValueError(f"no category has {binning.min_samples} or more samples among {labels.indices.size}")
    return Groups(names, number, counts, dropped)


def group_means(acts: dict[str, np.ndarray], groups: Groups) -> np.ndarray:
    """(K, len(PATHWAYS), D) float64 mean activation per group and pathway (the ``mean`` signals)."""
    return np.stack(
        [np.stack([acts[p][groups.number == k].mean(axis=0) for p in PATHWAYS]) for k in range(len(groups.names))]
    )


def make_signals(
    model: Any,
    ff: FeatureFile,
    indices: np.ndarray,
    binning: Binning,
    recipe: SignalRecipe,
    spec: SteeringSpec,
    *,
    batch_size: int,
    device: torch.device,
    cache_dir: Path | None,
    provenance: dict[str, Any],
) -> SignalSet:
    """Signals of ``indices`` (the signal split) by ``recipe``; ``provenance`` holds the hashes and split.

    On CPU everything runs with one torch thread, like the demo's training: with more, the float
    summation order can change from run to run (measured: the kept step moved between 123 and 154
    on the demo), and a fit amplifies the last bits, so a seed would not give the same vectors.
    """
    with cpu_threads(1 if device.type == "cpu" else None):
        labels = signal_labels(ff.valence, ff.arousal, indices, binning, recipe.labels, recipe.seed)
        if labels.indices.size == 0:
            raise ValueError(f"{ff.path}: no samples to make signals from")
        model_hash, data_hash = str(provenance["checkpoint_hash"]), str(provenance["data_hash"])
        acts = reference_activations(
            model,
            ff,
            labels.indices,
            model_hash=model_hash,
            data_hash=data_hash,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
        )
        groups = signal_groups(labels, binning)
        vectors = group_means(acts, groups)
        meta: dict[str, Any] = {"indices": labels.indices.tolist()}
        if labels.ratings_from is not None:
            meta["ratings_from"] = labels.ratings_from.tolist()
        if recipe.fitted:
            fitted, fit_meta = _fit(
                model, ff, labels, groups, vectors, recipe, spec, batch_size, device, cache_dir, (model_hash, data_hash)
            )
            vectors, meta = fitted, {**meta, **fit_meta}
        signals = _signal_set(vectors, groups, labels, binning, recipe, provenance, meta)
        signals.generation_config = {**recipe.describe(), "min_samples": binning.min_samples, "batch_size": batch_size}
        if labels.mode == "none":  # one vector everywhere: only the (zero) distances between categories say anything
            signals.metadata["diagnostics"] = signal_diagnostics(signals)
        else:
            signals.metadata["diagnostics"] = signal_diagnostics(signals, acts, labels.groups.astype(str))
        log.info(
            "made %d signals (%s, labels %s) from %d samples of split %s",
            len(signals),
            recipe.method,
            recipe.labels,
            labels.indices.size,
            provenance.get("split", "?"),
        )
        return signals


def _signal_set(
    vectors: np.ndarray,
    groups: Groups,
    labels: SignalLabels,
    binning: Binning,
    recipe: SignalRecipe,
    provenance: dict[str, Any],
    extra: dict[str, Any],
) -> SignalSet:
    """The users' layout: one entry per category (``none``: every category holds the one vector)."""
    from steering import __version__

    if labels.mode == "none":
        n = labels.indices.size
        table = {c: {p: vectors[0, j] for j, p in enumerate(PATHWAYS)} for c in binning.categories}
        counts = dict.fromkeys(binning.categories, n)  # every category's vector is made from all clips
    else:
        table = {c: {p: vectors[k, j] for j, p in enumerate(PATHWAYS)} for k, c in enumerate(groups.names)}
        counts = {c: groups.counts[c] for c in groups.names}
    split = provenance.get("split")
    meta: dict[str, Any] = {
        **provenance,
        "binning": binning.name,
        "binning_config": binning.to_dict(),
        "split": split,
        "leakage": split == "all" or bool(provenance.get("leakage", False)),
        "method": recipe.method,
        "labels": recipe.labels,
        "seed": int(recipe.seed),
        "min_samples": binning.min_samples,
        "n_samples": int(labels.indices.size),
        "counts": groups.counts if labels.mode != "none" else counts,
        "dropped": groups.dropped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "framework_version": __version__,
        **extra,
    }
    return SignalSet(binning_name=binning.name, vectors=table, counts=counts, metadata=meta)


def _fit(
    model: Any,
    ff: FeatureFile,
    labels: SignalLabels,
    groups: Groups,
    means: np.ndarray,
    recipe: SignalRecipe,
    spec: SteeringSpec,
    batch_size: int,
    device: torch.device,
    cache_dir: Path | None,
    hashes: tuple[str, str],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the steered pathways' vectors (the others keep their means); the vectors and their provenance."""
    rows = np.flatnonzero(groups.kept)
    idx = labels.indices[rows]
    held = holdout_split(labels.groups[rows], recipe.optimize.holdout, recipe.seed)
    if held.all() or not held.any():
        raise ConfigError(
            "signals.optimize.holdout", f"{ff.path}: {idx.size} signal-split clips are too few to hold some out"
        )
    steered = [PATHWAYS.index(p) for p in spec.pathways]
    batches, predict = _steered_forward(model, ff, idx, spec, batch_size, device, cache_dir, hashes)
    problem = FitProblem(means[:, steered], groups.number[rows], labels.targets[rows], held, batches, predict, device)
    started = time.perf_counter()
    result = fit_vectors(problem, recipe.optimize)
    vectors = means.copy()
    vectors[:, steered] = result.vectors
    return vectors, _fit_provenance(result, idx, held, time.perf_counter() - started)


def _fit_provenance(result: FitResult, idx: np.ndarray, held: np.ndarray, seconds: float) -> dict[str, Any]:
    """The fit's part of the signal file's metadata (the run logs its summary, cached or not: tracking.job)."""
    fit = {
        "step_size": result.step_size,
        "step": result.step,
        **result.losses,
        "seconds": round(seconds, 3),
        "curves": [c.to_dict() for c in result.curves],
    }
    # ``indices`` (what the leakage check and the random control read): every clip the fit saw
    return {"indices": idx.tolist(), "fit_indices": idx[~held].tolist(), "stop_indices": idx[held].tolist(), "fit": fit}


def _steered_forward(
    model: Any,
    ff: FeatureFile,
    idx: np.ndarray,
    spec: SteeringSpec,
    batch_size: int,
    device: torch.device,
    cache_dir: Path | None,
    hashes: tuple[str, str],
) -> tuple[list[slice], Predict]:
    """Row batches over ``idx`` and the differentiable steered forward of each, from the shared work at
    ``spec.first_block`` (computed once, chunked and cached like the evaluation's)."""
    first_block = spec.first_block
    chunks = plan_chunks(idx.size, batch_size, shared_bytes_per_clip(model, first_block, ff.frames))
    key = shared_key(
        model=hashes[0],
        purpose="signal fit",
        data=hashes[1],
        indices=indices_hash(idx),
        batch_size=batch_size,
        chunks=[(c.start, c.stop) for c in chunks],
        start_block=first_block,
        device=device.type,
        precision="fp32",
    )
    store = SharedPassStore(key, cache_dir, device)
    pooled = first_block == model.last_block and model.pooled_shortcut

    def features_of(rows: slice) -> torch.Tensor:
        return ff.read(idx[rows]).features.to(device)

    # (chunk, rows within the chunk) per batch; the pooled form needs only small products: one per chunk
    plan: list[tuple[int, slice]] = []
    for i, chunk in enumerate(chunks):
        size = chunk.stop - chunk.start
        step = size if pooled else batch_size
        plan += [(i, slice(s, min(s + step, size))) for s in range(0, size, step)]
    batches = [slice(chunks[i].start + r.start, chunks[i].start + r.stop) for i, r in plan]
    strengths = torch.tensor([float(spec.strength)], device=device)

    def predict(number: int, signals: torch.Tensor) -> torch.Tensor:
        i, rows = plan[number]
        # kept as ordinary tensors (clone), so every step slices them without a copy
        shared = store.get(i, lambda: shared_chunk(model, features_of, chunks[i], first_block, batch_size).clone())
        shared = shared.rows(rows)
        mask = torch.ones(signals.shape[0], dtype=torch.bool, device=device)
        sig = {p: signals[:, j] for j, p in enumerate(spec.pathways)}
        out = steered_from_shared(model, shared, spec, sig, mask, strengths)
        return torch.stack([out[t][0] for t in TARGETS], dim=1)

    return batches, predict
