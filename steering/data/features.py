"""Reader for the reference HDF5 feature file (docs/formats.md, "Feature file").

The file is opened lazily and read by index, so a large file is never loaded whole. What a file
declares (shapes, chunks, links) is checked against fixed bounds before any data is read, so a
tiny file that declares terabytes, or points at data outside itself, is refused in one line
instead of decompressed, allocated or followed.
"""

from __future__ import annotations

import contextlib
import itertools
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

#: Frames per clip: about 11 minutes at the reference hop of 10 ms (the reference clips have 1000).
MAX_FRAMES = 1 << 16
#: One clip's features as float32 (one row read at a time is the least the reader can do).
MAX_CLIP_BYTES = 64 << 20
#: What the reader holds for every clip at once (ratings, names; about 90 bytes a clip).
MAX_INDEX_BYTES = 2 << 30
#: One HDF5 chunk of ``feature``, uncompressed: a read decompresses whole chunks.
MAX_CHUNK_BYTES = 256 << 20
#: Declared feature bytes per stored byte: log-mel compresses a few times at most; zeros or
#: chunks never written (an HDF5 "bomb") much more. Checked once the features declare this much.
MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_BYTES = 256 << 20


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
            with self._h5py_errors("cannot read the file"):
                self._validate()
                self.valence = np.asarray(self._h5["valence"][:], dtype=np.float32)
                self.arousal = np.asarray(self._h5["arousal"][:], dtype=np.float32)
                self.audio_names = [_decode(n) for n in self._h5["audio_name"][:]]
        except BaseException:
            self._h5.close()
            raise

    @contextlib.contextmanager
    def _h5py_errors(self, what: str) -> Iterator[None]:
        """HDF5's own errors (a corrupt chunk, a broken link) as one line naming the file."""
        try:
            yield
        except (OSError, KeyError, RuntimeError) as exc:
            raise self._fail(f"{what} ({_first_line(exc)})") from None

    def _fail(self, problem: str) -> FeatureFileError:
        return FeatureFileError(f"{self.path}: {problem}")

    def _validate(self) -> None:
        h5 = self._h5
        self._check_links()
        missing = [k for k in REQUIRED_KEYS if k not in h5]
        if missing:
            found = sorted(itertools.islice(h5.keys(), 20))  # a hostile file may hold millions of names
            raise self._fail(f"missing key(s) {missing}; found {found}")
        for key in REQUIRED_KEYS:
            self._check_dataset(key)
        feature = h5["feature"]
        if feature.ndim != 3:
            raise self._fail(f"'feature' must have rank 3 (N, T, mel), got shape {feature.shape}")
        if not np.issubdtype(feature.dtype, np.floating):
            raise self._fail(f"'feature' must be floating point, got {feature.dtype}")
        n = feature.shape[0]
        for key in (*TARGETS, "audio_name"):
            if h5[key].ndim != 1 or h5[key].shape[0] != n:
                raise self._fail(f"'{key}' must have shape ({n},), got {h5[key].shape}")
        self._check_declared_sizes()
        for key in TARGETS:
            if h5[key].dtype.kind not in "iuf":
                raise self._fail(f"'{key}' must hold real numbers, got {h5[key].dtype}")
            values = h5[key][:]
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise self._fail(f"'{key}' has {bad.size} NaN/inf rating(s), first at indices {bad[:5].tolist()}")
        if h5["audio_name"].dtype.kind not in "SOU":
            raise self._fail(f"'audio_name' must hold strings, got {h5['audio_name'].dtype}")

    def _check_links(self) -> None:
        """External links are refused: the data hash covers this file's bytes only, not another file's."""
        for key in REQUIRED_KEYS:
            link = self._h5.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise self._fail(
                    f"'{key}' is an external link to {link.filename}:{link.path}; links to other files are "
                    "not followed (copy the data into this file, e.g. with h5copy)"
                )

    def _check_dataset(self, key: str) -> None:
        """A dataset stored in this file: no group, no virtual dataset, no external raw storage."""
        node = self._h5[key]
        if not isinstance(node, h5py.Dataset):
            raise self._fail(f"'{key}' must be a dataset, got a {type(node).__name__.lower()}")
        if Path(node.file.filename).resolve() != self.path.resolve():
            raise self._fail(
                f"'{key}' lives in another file ({node.file.filename}); links to other files are not followed"
            )
        if node.is_virtual:
            raise self._fail(
                f"'{key}' is a virtual dataset (its data lives in other files); copy the data into this file"
            )
        if node.external:
            raise self._fail(f"'{key}' keeps its data in external raw file(s) {[e[0] for e in node.external][:3]}")

    def _check_declared_sizes(self) -> None:
        """The declared shapes within the reader's bounds, before any value is read."""
        feature = self._h5["feature"]
        n, frames, mel = feature.shape
        if frames > MAX_FRAMES:
            raise self._fail(f"'feature' declares {frames} frames per clip; at most {MAX_FRAMES} are read")
        clip = frames * mel * 4
        if clip > MAX_CLIP_BYTES:
            raise self._fail(
                f"'feature' declares clips of {frames} x {mel} values ({human_bytes(clip)} each); at most "
                f"{human_bytes(MAX_CLIP_BYTES)} a clip are read"
            )
        per_clip = 8 + self._h5["audio_name"].dtype.itemsize + 64  # two ratings, the name and its str object
        if n * per_clip > MAX_INDEX_BYTES:
            raise self._fail(
                f"declares {n} clips; their ratings and names alone would take {human_bytes(n * per_clip)} in memory "
                f"(at most {human_bytes(MAX_INDEX_BYTES)})"
            )
        for key in REQUIRED_KEYS:  # a chunk may be larger than its dataset (a resizable one): bound each
            chunks, itemsize = self._h5[key].chunks, max(4, self._h5[key].dtype.itemsize)
            chunk = int(np.prod(chunks)) * itemsize if chunks is not None else 0
            if chunk > MAX_CHUNK_BYTES:
                raise self._fail(
                    f"'{key}' is stored in HDF5 chunks of {chunks} ({human_bytes(chunk)} each once decompressed); "
                    f"at most {human_bytes(MAX_CHUNK_BYTES)} (re-chunk the file, e.g. one clip a chunk)"
                )
        declared = n * clip
        stored = feature.id.get_storage_size()
        if declared >= RATIO_CHECK_BYTES and declared > MAX_COMPRESSION_RATIO * stored:
            raise self._fail(
                f"'feature' declares {human_bytes(declared)} but stores {human_bytes(stored)} (more than "
                f"{MAX_COMPRESSION_RATIO} times compressed, or never written): not log-mel features"
            )

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
        with self._h5py_errors(f"cannot read 'feature' at indices {unique[:5].tolist()}"):
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
    return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text[:300]


def human_bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1 (``7.45 GiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


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
