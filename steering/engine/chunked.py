"""Chunking of the shared work: storage chunks sized by bytes, compute in small batches.

A storage chunk is the unit of the shared-work cache; it holds as many clips as fit in a byte
budget (the whole evaluated set when the first steered block is the last one, whose cached state
is a (B, C) vector). Computation inside a chunk runs in batches of ``batch_size`` clips, the size
at which the convolutions run fastest, so memory stays bounded for any file size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from steering.engine.core import TARGETS, SharedPass, shared_pass, steer_from_shared
from steering.engine.spec import SteeringSpec
from steering.model.network import LRMEmotionNet

CHUNK_BYTES = 64 << 20


def shared_bytes_per_clip(model: LRMEmotionNet, start_block: int, frames: int) -> int:
    """Bytes one clip's shared results take (fp32): the prefix plus activations and modulations."""
    cfg = model.config
    c = cfg.channels[start_block]
    if start_block == model.last_block and model.pooled_shortcut:
        prefix = c
    else:
        prefix = c * (frames >> (start_block + 1)) * (cfg.mel_bins >> (start_block + 1))
    small = 2 * cfg.source_dim + 4 + sum(cfg.channels[conn.block_index] for conn in cfg.connections)
    return 4 * (prefix + small)


def plan_chunks(n_clips: int, batch_size: int, bytes_per_clip: int, budget: int = CHUNK_BYTES) -> list[slice]:
    """Consecutive slices of at most ``budget`` bytes each (a multiple of ``batch_size`` clips)."""
    per_chunk = max(batch_size, budget // max(bytes_per_clip, 1) // batch_size * batch_size)
    return [slice(i, min(i + per_chunk, n_clips)) for i in range(0, n_clips, per_chunk)]


def _batches(rows: slice, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, rows.stop)) for i in range(rows.start, rows.stop, batch_size)]


def shared_chunk(
    model: LRMEmotionNet,
    features_of: Callable[[slice], torch.Tensor],
    rows: slice,
    start_block: int,
    batch_size: int,
) -> SharedPass:
    """Shared work for ``rows`` of the evaluated clips, computed ``batch_size`` clips at a time."""
    return SharedPass.concat([shared_pass(model, features_of(b), start_block) for b in _batches(rows, batch_size)])


def steer_chunk(
    model: LRMEmotionNet,
    shared: SharedPass,
    spec: SteeringSpec,
    signals: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    strengths: torch.Tensor,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Steered predictions {target: (S, n)} for one chunk; convolutions run in small batches."""
    n = mask.shape[0]
    if shared.pooled:  # only small matrix products remain: the whole chunk at once
        return steer_from_shared(model, shared, spec, signals, mask, strengths)
    outs = []
    for rows in _batches(slice(0, n), batch_size):
        sig = {p: v[rows] for p, v in signals.items()}
        outs.append(steer_from_shared(model, shared.rows(rows), spec, sig, mask[rows], strengths))
    return {t: torch.cat([o[t] for o in outs], dim=1) for t in TARGETS}
