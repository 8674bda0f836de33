"""How distinct the category signals are, replacing the old "valence vs arousal vector correlation".

That old check correlated two different pathways' vectors, which says nothing about whether a
signal carries category information. These measures do, per pathway ``p``:

- ``{p}_mean_cosine_distance`` / ``{p}_min_cosine_distance``: mean / smallest ``1 - cos`` between
  pairs of category signals. 0 means the signals point the same way: after the ModBlock's per-sample
  normalisation, steering toward different categories would then be the same intervention.
- With per-sample ``activations`` and ``labels`` (categories):
  ``{p}_separation_ratio``: between- over within-category variance of the activations, each divided
  by its degrees of freedom (a one-way ANOVA F summed over the 128 dimensions). About 1 when the
  categories share a distribution, 0 when their means coincide, large when categories are apart.
  ``{p}_nearest_centroid_accuracy``: share of samples whose nearest signal (Euclidean) is their own
  category's, and ``nearest_centroid_chance`` (share of the largest category) to compare with.
  When the signals were computed from these same samples the accuracy is a resubstitution estimate
  (optimistic); on held-out samples it says how well the signals describe new data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from steering.signals.signalset import PATHWAYS, SignalSet


def cosine_distances(matrix: np.ndarray) -> np.ndarray:
    """``1 - cos`` of every pair of rows (i < j); nan for a zero row."""
    norms = np.linalg.norm(matrix, axis=1)
    pairs = list(itertools.combinations(range(len(matrix)), 2))
    out = np.empty(len(pairs))
    for n, (i, j) in enumerate(pairs):
        denom = norms[i] * norms[j]
        out[n] = 1 - float(matrix[i] @ matrix[j]) / denom if denom > 0 else math.nan
    return out


def separation_ratio(acts: np.ndarray, labels: np.ndarray) -> float:
    """One-way ANOVA F of ``acts`` (N, D) grouped by ``labels``, sums of squares pooled over D."""
    groups = np.unique(labels)
    k, n = len(groups), len(acts)
    if k < 2 or n <= k:
        return math.nan
    grand = acts.mean(axis=0)
    ssb = ssw = 0.0
    for g in groups:
        members = acts[labels == g]
        mean = members.mean(axis=0)
        ssb += len(members) * float(((mean - grand) ** 2).sum())
        ssw += float(((members - mean) ** 2).sum())
    between, within = ssb / (k - 1), ssw / (n - k)
    if within > 0:
        return between / within
    return 0.0 if between == 0 else math.inf


def nearest_centroid_accuracy(acts: np.ndarray, labels: np.ndarray, centroids: np.ndarray, names: list[str]) -> float:
    """Share of samples whose nearest centroid (Euclidean) has their own label."""
    if len(acts) == 0 or len(centroids) == 0:
        return math.nan
    d2 = (acts**2).sum(axis=1)[:, None] - 2 * acts @ centroids.T + (centroids**2).sum(axis=1)[None, :]
    predicted = np.asarray(names)[np.argmin(d2, axis=1)]
    return float(np.mean(predicted == labels))


def signal_diagnostics(
    signals: SignalSet,
    activations: Mapping[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Separation diagnostics of ``signals`` (see the module docstring); keys ``{pathway}_...``."""
    out: dict[str, float] = {"n_categories": float(len(signals))}
    for pathway in PATHWAYS:
        dist = cosine_distances(signals.matrix(pathway))
        finite = dist[np.isfinite(dist)]
        out[f"{pathway}_mean_cosine_distance"] = float(finite.mean()) if finite.size else math.nan
        out[f"{pathway}_min_cosine_distance"] = float(finite.min()) if finite.size else math.nan
    if activations is None or labels is None:
        return out
    labels = np.asarray(labels).astype(str)
    keep = np.isin(labels, list(signals.categories))
    names = list(signals.categories)
    for pathway in PATHWAYS:
        if pathway not in activations:
            continue
        acts = np.asarray(activations[pathway], dtype=np.float64)
        if len(acts) != len(labels):
            raise ValueError(f"{pathway}: {len(acts)} activations but {len(labels)} labels")
        acts_k, labels_k = acts[keep], labels[keep]
        out[f"{pathway}_separation_ratio"] = separation_ratio(acts_k, labels_k)
        out[f"{pathway}_nearest_centroid_accuracy"] = nearest_centroid_accuracy(
            acts_k, labels_k, signals.matrix(pathway), names
        )
    if keep.any():
        _, sizes = np.unique(labels[keep], return_counts=True)
        out["nearest_centroid_chance"] = float(sizes.max() / sizes.sum())
    return out
