"""``signals.method=knn``: each clip's signal is the mean pass-1 activation of its k nearest split clips.

The axis from an individual signal (k = 1: the activation of the single most similar clip of the
signal split) to an averaged one (k >= the split's size: every clip, i.e. the grand mean of the
split's activations), which no category label decides: neighbours are found in pass-1 activation
space, so evaluation reads no rating. Choices (docs/signals.md):

- the space is both pathways' 128-d activations concatenated (valence then arousal), so one set of
  neighbours serves both pathways and a clip's two signals come from the same clips;
- the distance is Euclidean (squared, in float64); among equally distant split clips the one with
  the lower position in ``reference`` wins, so the neighbours are a function of the inputs alone;
- the caller passes the split's activations with every evaluated clip removed (see
  ``steering.signals.reference.reference_indices``), so no clip is its own neighbour.

Memory stays bounded: the query-by-reference distance matrix is built ``max_bytes`` at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from steering.vocab import PATHWAYS

log = logging.getLogger(__name__)

#: Bytes of one chunk of the (queries x reference) float64 distance matrix and its masks.
CHUNK_BYTES = 64 * 2**20


def joint_space(activations: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, 2 x 128) float64: both pathways' activations side by side, the space neighbours are found in."""
    return np.concatenate([np.asarray(activations[p], dtype=np.float64) for p in PATHWAYS], axis=1)


def nearest_mask(query: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """(n, M) bool: row i marks the ``k`` reference rows nearest to query row i (ties: lower index first)."""
    d2 = (
        np.einsum("ij,ij->i", query, query)[:, None]
        - 2.0 * query @ reference.T
        + np.einsum("ij,ij->i", reference, reference)[None, :]
    )
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1 : k]
    closer = d2 < kth
    tied = d2 == kth
    # Of the clips tied with the k-th distance, those of lowest index fill the places left.
    places = k - closer.sum(axis=1, keepdims=True)
    return closer | (tied & (np.cumsum(tied, axis=1) <= places))


def knn_signals(
    query: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    k: int,
    max_bytes: int = CHUNK_BYTES,
) -> dict[str, np.ndarray]:
    """{pathway: (N, 128) float32}: per query clip, the mean ``reference`` activation of its k nearest clips.

    ``query``/``reference``: {pathway: (N, 128)} / {pathway: (M, 128)} pass-1 activations. ``k`` >= M
    takes every reference clip, so each row is the reference's grand mean (computed as that mean).
    """
    if k < 1:
        raise ValueError(f"signals.k must be >= 1, got {k}")
    ref = {p: np.asarray(reference[p], dtype=np.float64) for p in PATHWAYS}
    m = len(ref[PATHWAYS[0]])
    if m == 0:
        raise ValueError("knn signals need at least one clip of the signal split")
    n = len(query[PATHWAYS[0]])
    if k >= m:
        return {p: np.tile(ref[p].mean(axis=0).astype(np.float32), (n, 1)) for p in PATHWAYS}
    space_q, space_r = joint_space(query), joint_space(ref)
    rows = max(1, int(max_bytes // (m * (8 + 3))))  # float64 distances plus three bool masks per cell
    out = {p: np.empty((n, ref[p].shape[1]), dtype=np.float32) for p in PATHWAYS}
    for start in range(0, n, rows):
        block = slice(start, min(n, start + rows))
        chosen = nearest_mask(space_q[block], space_r, k).astype(np.float64)
        for p in PATHWAYS:
            out[p][block] = (chosen @ ref[p]) / k
    log.info("knn signals: %d clips, k = %d of %d split clips", n, k, m)
    return out
