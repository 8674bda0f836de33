"""Synthetic affective soundscapes: deterministic, plausible ratings, acoustics that follow the latents."""

from __future__ import annotations

import numpy as np
import pytest

from steering.audio.render import synthetic_features
from steering.audio.synthetic import clips, make_set, synthesize
from steering.config.schema import FrontendConf, SyntheticConf

SR = 32000


def _centroid(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    return float((spec * freqs).sum() / spec.sum())


def test_ratings_distribution_like_emo_soundscapes():
    data = make_set(SyntheticConf(n_clips=1213, seed=0))
    v, a = data.valence, data.arousal
    assert v.dtype == np.float32 and v.min() >= -1 and a.max() <= 1
    assert np.corrcoef(v, a)[0, 1] < -0.1  # unpleasant sounds tend to be arousing
    cell = np.digitize(v, [-0.3, 0.3], right=True) * 3 + np.digitize(a, [-0.3, 0.3], right=True)
    counts = np.bincount(cell, minlength=9)
    assert counts.min() >= 1 and counts[0] < 0.1 * counts.max()  # negative_weak rare, all categories present
    assert 0.03 < np.std(v - data.latent_valence) < 0.2  # rater noise


def test_deterministic_and_seed_dependent():
    cfg = SyntheticConf(n_clips=4, duration=0.25, seed=1)
    first = list(clips(cfg))
    again = list(clips(cfg))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    other = list(clips(SyntheticConf(n_clips=4, duration=0.25, seed=2)))
    assert not np.allclose(first[0], other[0])
    # A clip does not depend on which other clips are generated with it.
    np.testing.assert_array_equal(list(clips(cfg, start=2, stop=3))[0], first[2])
    assert first[0].shape == (8000,) and np.isfinite(first[0]).all()


def test_arousal_brightens_and_valence_raises_pitch():
    cfg = SyntheticConf(duration=1.0, parameter_jitter=0.0)
    calm = [_centroid(synthesize(0.0, -0.9, cfg, np.random.default_rng(i))) for i in range(6)]
    tense = [_centroid(synthesize(0.0, 0.9, cfg, np.random.default_rng(i))) for i in range(6)]
    assert np.median(tense) > 1.5 * np.median(calm)
    cfg = SyntheticConf(duration=1.0, parameter_jitter=0.0)
    low = [synthesize(-0.9, -0.9, cfg, np.random.default_rng(i)) for i in range(6)]
    high = [synthesize(0.9, -0.9, cfg, np.random.default_rng(i)) for i in range(6)]
    # Pitch register: the strongest spectral peak sits higher for pleasant clips.
    peak = lambda y: np.argmax(np.abs(np.fft.rfft(y)))  # noqa: E731
    assert np.median([peak(y) for y in high]) > 2 * np.median([peak(y) for y in low])


def test_features_independent_of_workers():
    syn = SyntheticConf(n_clips=6, duration=0.3, seed=0)
    fe = FrontendConf(frames=32)
    one, *_ = synthetic_features(syn, fe, workers=1, chunk=4, progress=False)
    two, _, names, v, a = synthetic_features(syn, fe, workers=2, chunk=2, progress=False)
    np.testing.assert_array_equal(one, two)
    assert one.shape == (6, 32, 64) and len(names) == 6 and v.shape == (6,)
    assert one.max() == pytest.approx(0.0) and one.min() >= -80.0


def test_unknown_setting():
    with pytest.raises(TypeError, match="n_clip"):
        SyntheticConf(n_clip=3)
