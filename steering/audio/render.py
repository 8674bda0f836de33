"""Synthetic soundscapes through the log-mel front end: the features of a synthetic set, and its file.

Clips are generated in worker processes (numpy only); the torch front end stays in this process.
The result does not depend on the number of workers: every clip has its own seeded generator.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from steering.audio.frontend import LogMel
from steering.audio.synthetic import clips, make_set
from steering.config.schema import FrontendConf, SyntheticConf
from steering.data import write_feature_file
from steering.util.hardware import cpu_threads

log = logging.getLogger(__name__)


def _synthetic_chunk(args: tuple[SyntheticConf, int, int, int]) -> np.ndarray:
    """Worker: waveforms of clips ``start .. stop - 1`` (numpy only, so forking is safe)."""
    syn, sample_rate, start, stop = args
    return np.stack(list(clips(syn, make_set(syn), start, stop, sample_rate)))


def synthetic_features(
    synthetic: SyntheticConf | None = None,
    frontend: FrontendConf | None = None,
    workers: int = 0,
    chunk: int = 32,
    progress: bool = True,
) -> tuple[np.ndarray, SyntheticConf, list[str], np.ndarray, np.ndarray]:
    """(features, config, names, valence, arousal) of a synthetic set; ``workers`` 0 = all cores.

    The result does not depend on ``workers`` or ``chunk``: every clip has its own seeded generator.
    """
    syn = synthetic if synthetic is not None else SyntheticConf()
    fe = frontend if frontend is not None else FrontendConf()
    data = make_set(syn)
    front = LogMel(fe)
    jobs = [(syn, fe.sample_rate, s, min(s + chunk, syn.n_clips)) for s in range(0, syn.n_clips, chunk)]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=syn.n_clips, desc="synthetic clips", unit="clip", disable=not progress)
    parts = []
    try:
        if workers <= 1 or len(jobs) <= 1 or "fork" not in get_all_start_methods():
            waves = map(_synthetic_chunk, jobs)
            for job, wave in zip(jobs, waves):
                parts.append(front.batch(wave))
                bar.update(job[3] - job[2])
        else:
            # Workers only run numpy; the torch front end stays in this process, on one thread.
            with cpu_threads(1), ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("fork")) as pool:
                for job, wave in zip(jobs, pool.map(_synthetic_chunk, jobs)):
                    parts.append(front.batch(wave))
                    bar.update(job[3] - job[2])
    finally:
        bar.close()
    return np.concatenate(parts), syn, data.names, data.valence, data.arousal


def prepare_synthetic(
    output: str | Path,
    synthetic: SyntheticConf | None = None,
    frontend: FrontendConf | None = None,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Generate the synthetic set and write its feature file (atomically)."""
    feats, syn, names, valence, arousal = synthetic_features(synthetic, frontend, workers, progress=progress)
    path = write_feature_file(output, feats, valence, arousal, names)
    log.info("wrote %d synthetic clips (seed %d) to %s", syn.n_clips, syn.seed, path)
    return path
