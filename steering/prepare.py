"""Audio + ratings -> feature file in the reference HDF5 layout (docs/formats.md).

``python -m steering.prepare source.audio_dir=DIR output=features.h5`` reads a folder of audio
(nested folders; wav/flac/ogg) with ``Valence.csv`` and ``Arousal.csv`` (no header: file name,
rating), the Emo-Soundscapes layout. ``python -m steering.prepare source=synthetic`` generates the
synthetic affective soundscapes instead; both go through the same front end.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from steering.audio.synthetic import SyntheticConfig, clips, make_set
from steering.config import config_dir
from steering.errors import one_line_errors

if TYPE_CHECKING:
    from steering.audio.frontend import FrontEndConfig

# The torch front end, the feature-file writer and the thread control load inside the functions
# that use them, so the app composes its config and answers --help without torch.

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = ("wav", "flac", "ogg")


class PrepareError(ValueError):
    """Input that cannot become a feature file (missing folder, malformed CSV, nothing matched)."""


# --------------------------------------------------------------------------- ratings and matching
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


# --------------------------------------------------------------------------- sources
def prepare_folder(
    audio_dir: str | Path,
    output: str | Path,
    frontend: FrontEndConfig | Mapping | None = None,
    valence_csv: str | Path | None = None,
    arousal_csv: str | Path | None = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    strict: bool = False,
    progress: bool = True,
) -> tuple[Path, Match]:
    """Features of every rated clip in ``audio_dir``; unmatched audio/ratings are reported (or, strict, fatal)."""
    from steering.audio.frontend import LogMel
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


def _synthetic_chunk(args: tuple[dict, int, int]) -> np.ndarray:
    """Worker: waveforms of clips ``start .. stop - 1`` (numpy only, so forking is safe)."""
    syn_dict, start, stop = args
    syn = SyntheticConfig.from_mapping(syn_dict)
    return np.stack(list(clips(syn, make_set(syn), start, stop)))


def synthetic_features(
    synthetic: SyntheticConfig | Mapping | None = None,
    frontend: FrontEndConfig | Mapping | None = None,
    workers: int = 0,
    chunk: int = 32,
    progress: bool = True,
) -> tuple[np.ndarray, SyntheticConfig, list[str], np.ndarray, np.ndarray]:
    """(features, config, names, valence, arousal) of a synthetic set; ``workers`` 0 = all cores.

    The result does not depend on ``workers`` or ``chunk``: every clip has its own seeded generator.
    """
    from steering.audio.frontend import LogMel, frontend_config
    from steering.engine.hardware import cpu_threads

    syn = synthetic if isinstance(synthetic, SyntheticConfig) else SyntheticConfig.from_mapping(synthetic)
    fe = frontend_config(frontend)
    if fe.sample_rate != syn.sample_rate:
        syn = SyntheticConfig(**{**syn.to_dict(), "sample_rate": fe.sample_rate})
    data = make_set(syn)
    front = LogMel(fe)
    jobs = [(syn.to_dict(), s, min(s + chunk, syn.n_clips)) for s in range(0, syn.n_clips, chunk)]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=syn.n_clips, desc="synthetic clips", unit="clip", disable=not progress)
    parts = []
    try:
        if workers <= 1 or len(jobs) <= 1 or "fork" not in get_all_start_methods():
            waves = map(_synthetic_chunk, jobs)
            for job, wave in zip(jobs, waves):
                parts.append(front.batch(wave))
                bar.update(job[2] - job[1])
        else:
            # Workers only run numpy; the torch front end stays in this process, on one thread.
            with cpu_threads(1), ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("fork")) as pool:
                for job, wave in zip(jobs, pool.map(_synthetic_chunk, jobs)):
                    parts.append(front.batch(wave))
                    bar.update(job[2] - job[1])
    finally:
        bar.close()
    return np.concatenate(parts), syn, data.names, data.valence, data.arousal


def prepare_synthetic(
    output: str | Path,
    synthetic: SyntheticConfig | Mapping | None = None,
    frontend: FrontEndConfig | Mapping | None = None,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Generate the synthetic set and write its feature file (atomically)."""
    from steering.data import write_feature_file

    feats, syn, names, valence, arousal = synthetic_features(synthetic, frontend, workers, progress=progress)
    path = write_feature_file(output, feats, valence, arousal, names)
    log.info("wrote %d synthetic clips (seed %d) to %s", syn.n_clips, syn.seed, path)
    return path


# --------------------------------------------------------------------------- Hydra app
def run(cfg: Mapping) -> Path:
    """Dispatch on ``cfg.source.name`` (folder or synthetic); the output path is checked before work."""
    from steering.assets.validation import check_output_path

    check_output_path(cfg)
    source = dict(cfg["source"])
    name = source.pop("name", "folder")
    frontend = dict(cfg.get("frontend") or {})
    output = Path(cfg["output"])
    if name == "folder":
        if not source.get("audio_dir"):
            raise PrepareError("source.audio_dir is not set: pass source.audio_dir=/path/to/audio")
        path, _ = prepare_folder(
            source["audio_dir"],
            output,
            frontend,
            valence_csv=source.get("valence_csv"),
            arousal_csv=source.get("arousal_csv"),
            extensions=tuple(source.get("extensions") or AUDIO_EXTENSIONS),
            strict=bool(source.get("strict", False)),
        )
        return path
    if name == "synthetic":
        workers = int(source.pop("workers", 0))
        return prepare_synthetic(output, source, frontend, workers)
    raise PrepareError(f"unknown source {name!r}; expected 'folder' or 'synthetic'")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="prepare")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(OmegaConf.to_container(cfg, resolve=True))


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    from steering.errors import run_app

    run_app(main)


if __name__ == "__main__":
    cli()
