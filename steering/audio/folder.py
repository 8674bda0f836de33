"""A folder of rated audio -> feature file: Emo-Soundscapes-style ratings paired with their clips.

The folder holds audio (nested folders; wav/flac/ogg) with ``Valence.csv`` and ``Arousal.csv`` (no
header: file name, rating); docs/formats.md describes the feature file written.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from steering.audio.frontend import LogMel
from steering.config.schema import FrontendConf
from steering.errors import SteeringError

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = ("wav", "flac", "ogg")


class PrepareError(SteeringError, ValueError):
    """Input that cannot become a feature file (missing folder, malformed CSV, nothing matched)."""


def read_ratings(path: str | Path) -> dict[str, float]:
    """``name,rating`` rows without a header -> {name: rating}; bad rows raise naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: ratings file not found")
    ratings: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 2:
                raise PrepareError(f"{path}:{line_no}: expected 'file name,rating', got {row!r}")
            name, raw = row[0].strip(), row[1].strip()
            try:
                value = float(raw)
            except ValueError:
                raise PrepareError(f"{path}:{line_no}: rating {raw!r} of {name!r} is not a number") from None
            if not math.isfinite(value):
                raise PrepareError(f"{path}:{line_no}: rating of {name!r} is {raw}")
            if name in ratings:
                raise PrepareError(f"{path}:{line_no}: {name!r} is rated twice")
            ratings[name] = value
    if not ratings:
        raise PrepareError(f"{path}: no ratings found")
    return ratings


def find_audio(audio_dir: str | Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``audio_dir`` (recursively), sorted by relative path."""
    root = Path(audio_dir)
    if not root.is_dir():
        raise PrepareError(f"{root}: audio folder not found")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


@dataclass
class Match:
    """Rated clips with their audio, and what did not pair up."""

    names: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    valence: list[float] = field(default_factory=list)
    arousal: list[float] = field(default_factory=list)
    audio_without_ratings: list[str] = field(default_factory=list)
    ratings_without_audio: list[str] = field(default_factory=list)
    only_one_rating: list[str] = field(default_factory=list)


def match_ratings(
    audio_dir: str | Path, files: Sequence[Path], valence: Mapping[str, float], arousal: Mapping[str, float]
) -> Match:
    """Pair rated names with files by relative path, then file name, then name without extension."""
    root = Path(audio_dir)
    lookup: dict[str, list[Path]] = {}
    for p in files:
        rel = p.relative_to(root).as_posix()
        for key in {rel, p.name, p.stem, Path(rel).with_suffix("").as_posix()}:
            lookup.setdefault(key, []).append(p)
    match = Match()
    used: set[Path] = set()
    rated = list(valence) + [n for n in arousal if n not in valence]
    for name in rated:
        if name not in valence or name not in arousal:
            match.only_one_rating.append(name)
            continue
        candidates = lookup.get(name) or lookup.get(Path(name).stem) or []
        if not candidates:
            match.ratings_without_audio.append(name)
            continue
        if len(set(candidates)) > 1:
            raise PrepareError(
                f"{root}: rated name {name!r} matches several files {[str(c) for c in candidates]}; "
                "use relative paths in the CSVs"
            )
        match.names.append(name)
        match.paths.append(candidates[0])
        match.valence.append(valence[name])
        match.arousal.append(arousal[name])
        used.add(candidates[0])
    match.audio_without_ratings = [p.relative_to(root).as_posix() for p in files if p not in used]
    return match


def _report(kind: str, items: Sequence[str], limit: int = 10) -> None:
    if items:
        more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
        log.warning("%d %s: %s%s", len(items), kind, ", ".join(items[:limit]), more)


def prepare_folder(
    audio_dir: str | Path,
    output: str | Path,
    frontend: FrontendConf | None = None,
    valence_csv: str | Path | None = None,
    arousal_csv: str | Path | None = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    strict: bool = False,
    progress: bool = True,
) -> tuple[Path, Match]:
    """Features of every rated clip in ``audio_dir``; unmatched audio/ratings are reported (or, strict, fatal)."""
    from steering.data import write_feature_file

    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise PrepareError(f"{audio_dir}: audio folder not found")
    valence = read_ratings(valence_csv or audio_dir / "Valence.csv")
    arousal = read_ratings(arousal_csv or audio_dir / "Arousal.csv")
    files = find_audio(audio_dir, extensions)
    match = match_ratings(audio_dir, files, valence, arousal)
    _report("audio file(s) without ratings", match.audio_without_ratings)
    _report("rated name(s) without audio", match.ratings_without_audio)
    _report("name(s) rated for only one of valence/arousal", match.only_one_rating)
    unmatched = match.audio_without_ratings or match.ratings_without_audio or match.only_one_rating
    if strict and unmatched:
        raise PrepareError(f"{audio_dir}: audio and ratings do not pair up (see the warnings above); strict=true")
    if not match.names:
        raise PrepareError(f"{audio_dir}: no audio file matches a name in both Valence.csv and Arousal.csv")
    front = LogMel(frontend)
    feats = np.empty((len(match.paths), front.cfg.frames, front.cfg.mel_bins), dtype=np.float32)
    for i, path in enumerate(tqdm(match.paths, desc="features", unit="clip", disable=not progress)):
        feats[i] = front.file(path)
    path = write_feature_file(output, feats, np.array(match.valence), np.array(match.arousal), match.names)
    log.info("wrote %d clips to %s", len(match.names), path)
    return path, match
