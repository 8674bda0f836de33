"""Reader for the reference HDF5 feature file (docs/formats.md, "Feature file").

The file is opened lazily and read by index, so a large file is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from steering.errors import SteeringError
from steering.util.files import atomic_path
from steering.util.hashing import file_digest
from steering.vocab import TARGETS

#: The datasets of a feature file: the log-mel features, one rating per target, the clip names.
REQUIRED_KEYS = ("feature", *TARGETS, "audio_name")


class FeatureFileError(SteeringError, ValueError):
    """A feature file that is missing, malformed or holds invalid values."""


@dataclass
class Batch:
    """One batch: features (B, T, F) float32 tensor, ratings (B,) tensors, names and file indices."""

    features: torch.Tensor
    valence: torch.Tensor
    arousal: torch.Tensor
    audio_name: list[str]
    indices: np.ndarray


class FeatureFile:
    """Validated, index-addressable view of a feature file. Use as a context manager or ``close()``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatureFileError(f"{self.path}: feature file not found")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise FeatureFileError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        try:
            self._validate()
        except Exception:
            self._h5.close()
            raise
        self.valence = np.asarray(self._h5["valence"][:], dtype=np.float32)
        self.arousal = np.asarray(self._h5["arousal"][:], dtype=np.float32)
        self.audio_names = [_decode(n) for n in self._h5["audio_name"][:]]

    def _fail(self, problem: str) -> FeatureFileError:
        return FeatureFileError(f"{self.path}: {problem}")

    def _validate(self) -> None:
        h5 = self._h5
        missing = [k for k in REQUIRED_KEYS if k not in h5]
        if missing:
            raise self._fail(f"missing key(s) {missing}; found {sorted(h5.keys())}")
        feature = h5["feature"]
        if feature.ndim != 3:
            raise self._fail(f"'feature' must have rank 3 (N, T, mel), got shape {feature.shape}")
        if not np.issubdtype(feature.dtype, np.floating):
            raise self._fail(f"'feature' must be floating point, got {feature.dtype}")
        n = feature.shape[0]
        for key in (*TARGETS, "audio_name"):
            if h5[key].ndim != 1 or h5[key].shape[0] != n:
                raise self._fail(f"'{key}' must have shape ({n},), got {h5[key].shape}")
        for key in TARGETS:
            if not np.issubdtype(h5[key].dtype, np.number):
                raise self._fail(f"'{key}' must be numeric, got {h5[key].dtype}")
            values = h5[key][:]
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise self._fail(f"'{key}' has {bad.size} NaN/inf rating(s), first at indices {bad[:5].tolist()}")
        if h5["audio_name"].dtype.kind not in "SOU":
            raise self._fail(f"'audio_name' must hold strings, got {h5['audio_name'].dtype}")

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self._h5["feature"].shape[0])

    @property
    def frames(self) -> int:
        return int(self._h5["feature"].shape[1])

    @property
    def mel_bins(self) -> int:
        return int(self._h5["feature"].shape[2])

    def fingerprint(self) -> str:
        """Content hash of the whole file (read in 1 MiB chunks)."""
        return file_hash(self.path)

    # ------------------------------------------------------------------ reading
    def read(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """Read the given file indices (any order, no duplicates needed) as one batch."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.path}: indices out of range 0..{len(self) - 1}")
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        unique, inverse = np.unique(sorted_idx, return_inverse=True)
        block = self._h5["feature"][unique] if unique.size else np.zeros((0, self.frames, self.mel_bins))
        feats = np.empty((idx.size, self.frames, self.mel_bins), dtype=np.float32)
        feats[order] = block[inverse]
        if not np.isfinite(feats).all():
            bad = idx[~np.isfinite(feats).reshape(idx.size, -1).all(axis=1)]
            raise self._fail(f"'feature' has NaN/inf values at indices {bad[:5].tolist()}")
        return Batch(
            features=torch.from_numpy(feats),
            valence=torch.from_numpy(self.valence[idx]),
            arousal=torch.from_numpy(self.arousal[idx]),
            audio_name=[self.audio_names[i] for i in idx],
            indices=idx,
        )

    def batches(self, indices: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[Batch]:
        """Batches over ``indices`` in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            yield self.read(idx[start : start + batch_size])

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(name: bytes | str) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def file_hash(path: str | Path, length: int = 16) -> str:
    """SHA-256 of a file's bytes (hex, truncated); remembered per process while the file is unchanged,
    so the jobs of a sweep do not re-read a large feature file each."""
    return file_digest(path, length)


def same_feature_file(recorded: object, data_hash: str) -> bool:
    """Whether a data hash recorded with earlier work (e.g. a signal file's ``metadata.data_hash``)
    names the feature file whose hash is ``data_hash``.

    No record counts as the same file (files written before hashes were recorded). Hashes are
    compared on their common prefix, since some records keep the full digest and others the
    16-character :func:`file_hash`.
    """
    if not recorded:
        return True
    recorded = str(recorded)
    return recorded.startswith(data_hash) or data_hash.startswith(recorded)


def write_feature_file(
    path: str | Path,
    features: np.ndarray,
    valence: np.ndarray,
    arousal: np.ndarray,
    audio_names: Sequence[str],
) -> Path:
    """Write arrays in the reference layout, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise FeatureFileError(f"{path}: is a directory; give a file path")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:  # an error or Ctrl-C leaves no half-written file
        h5.create_dataset("feature", data=np.asarray(features, dtype=np.float32))
        h5.create_dataset("valence", data=np.asarray(valence, dtype=np.float32))
        h5.create_dataset("arousal", data=np.asarray(arousal, dtype=np.float32))
        width = max([len(n.encode()) for n in audio_names] + [1])
        h5.create_dataset("audio_name", data=np.array([n.encode() for n in audio_names], dtype=f"S{width}"))
    return path
