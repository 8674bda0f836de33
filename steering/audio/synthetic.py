"""Synthetic affective soundscapes: audio whose acoustics follow documented valence/arousal correlates.

Each clip has a latent (valence, arousal) point drawn from a correlated, uneven mixture (like
Emo-Soundscapes, where calm unpleasant sounds are rare). The latent point sets the acoustic
parameters (docs/synthetic.md gives the literature for each):

* arousal: loudness of the foreground over a fixed background, event rate, spectral brightness
  (harmonic roll-off, noise tilt), noisiness (noise share of each event) and attack sharpness;
* valence: consonance (consonant chords vs clusters), roughness (beating partials 20-70 Hz apart),
  mode (major vs minor third), pitch register and smoothness (vibrato vs irregular tremolo).

Every parameter gets its own jitter, and the stored ratings are the latent point plus rater noise,
clipped to [-1, 1]. All randomness comes from one ``numpy.random.Generator`` seeded by ``seed``:
the same config gives bit-identical clips and ratings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from steering.config.schema import SyntheticConf

TABLE_SIZE = 4096
ENV_RATE = 1000  # envelopes are built on a 1 ms grid, then interpolated to the sample rate

#: Mixture over (valence, arousal): (weight, mean valence, mean arousal, sd valence, sd arousal, correlation).
#: Uneven on purpose: unpleasant sounds are mostly arousing, calm unpleasant ones rare.
MIXTURE: tuple[tuple[float, float, float, float, float, float], ...] = (
    (0.27, -0.55, 0.55, 0.20, 0.20, -0.3),  # alarms, traffic, machinery: negative, strong
    (0.25, 0.00, 0.05, 0.22, 0.20, -0.2),  # everyday ambience: neutral, moderate
    (0.22, 0.55, -0.45, 0.20, 0.20, 0.0),  # birdsong, water, calm music: positive, weak
    (0.18, 0.55, 0.50, 0.20, 0.20, 0.2),  # lively music, play: positive, strong
    (0.07, 0.15, -0.60, 0.15, 0.15, 0.0),  # quiet rooms, wind: neutral, weak
    (0.01, -0.45, -0.45, 0.10, 0.10, 0.0),  # dull hum: negative, weak (rare, as in Emo-Soundscapes)
)

CONSONANT_CHORDS = ((0, 7, 12), (0, 4, 7), (0, 5, 12), (0, 12, 19))  # fifth/octave/triad: low roughness
DISSONANT_CHORDS = ((0, 1, 6), (0, 6, 11), (0, 1, 2), (0, 2, 11))  # semitones, tritone, major seventh


#: The front end's default rate (``FrontendConf.sample_rate``); the clips are made at the front end's rate.
SAMPLE_RATE = 32000


@dataclass
class SyntheticSet:
    """Latent points, noisy ratings and names of a synthetic set (audio is produced lazily)."""

    latent_valence: np.ndarray
    latent_arousal: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    names: list[str]


def sample_latents(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(valence, arousal) latent points in [-1, 1] from the mixture."""
    weights = np.array([m[0] for m in MIXTURE])
    comp = rng.choice(len(MIXTURE), size=n, p=weights / weights.sum())
    params = np.array([m[1:] for m in MIXTURE])[comp]
    mv, ma, sv, sa, rho = params.T
    z1, z2 = rng.standard_normal((2, n))
    v = mv + sv * z1
    a = ma + sa * (rho * z1 + np.sqrt(1 - rho**2) * z2)
    return np.clip(v, -1, 1), np.clip(a, -1, 1)


def make_set(cfg: SyntheticConf) -> SyntheticSet:
    """Latents and noisy ratings; deterministic from ``cfg.seed``."""
    rng = np.random.default_rng([cfg.seed, 0])
    lv, la = sample_latents(cfg.n_clips, rng)
    noise = rng.normal(0.0, cfg.rater_noise, size=(2, cfg.n_clips))
    valence = np.clip(lv + noise[0], -1, 1).astype(np.float32)
    arousal = np.clip(la + noise[1], -1, 1).astype(np.float32)
    names = [f"{cfg.name_prefix}_{i:05d}.wav" for i in range(cfg.n_clips)]
    return SyntheticSet(lv, la, valence, arousal, names)


def _harmonic_table(rolloff: float, n_harmonics: int) -> np.ndarray:
    """One period of sum_h h^-rolloff sin(2 pi h x), peak-normalised (built by an inverse FFT)."""
    spec = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    h = np.arange(1, n_harmonics + 1)
    spec[h] = -0.5j * TABLE_SIZE * h**-rolloff
    table = np.fft.irfft(spec, TABLE_SIZE)
    return table / np.abs(table).max()


@lru_cache(maxsize=8)
def _freq_grid(n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.fft.rfftfreq(n, 1 / sr)
    return freqs, np.log(np.maximum(freqs, 1.0))


def _shaped_noise(n: int, sr: int, tilt: float, highpass: float, rng: np.random.Generator) -> np.ndarray:
    """White noise with spectral slope f^-tilt/2 above ``highpass`` Hz, unit RMS (FFT shaping)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs, log_freqs = _freq_grid(n, sr)
    gain = np.where(freqs > highpass, np.exp(log_freqs * (-tilt / 2)), 0.0)
    out = np.fft.irfft(spec * gain, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _event_envelope(n_env: int, rate: float, attack_ms: float, decay_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson event train on the 1 ms grid convolved with an attack/decay kernel, peak 1."""
    onsets = rng.random(n_env) < rate / ENV_RATE
    onsets[int(rng.integers(0, max(1, n_env // 4)))] = True  # at least one event, early in the clip
    k = np.arange(int(attack_ms + 5 * decay_ms) + 1, dtype=float)
    kernel = np.where(k < attack_ms, k / max(attack_ms, 1e-3), np.exp(-(k - attack_ms) / decay_ms))
    env = np.convolve(onsets.astype(float) * rng.uniform(0.6, 1.0, n_env), kernel)[:n_env]
    return env / (env.max() + 1e-12)


def _interp(env: np.ndarray, n: int) -> np.ndarray:
    """Stretch a coarse envelope to ``n`` samples by linear interpolation."""
    return np.interp(np.linspace(0, len(env) - 1, n), np.arange(len(env)), env)


def synthesize(
    valence: float, arousal: float, cfg: SyntheticConf, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """One clip (float64 mono at ``sample_rate``) for a latent (valence, arousal) point."""
    sr, n = sample_rate, int(round(cfg.duration * sample_rate))
    j = cfg.parameter_jitter

    def unit(x: float) -> float:  # latent in [-1, 1] -> jittered parameter in [0, 1]
        return float(np.clip((x + 1) / 2 + rng.normal(0, j), 0, 1))

    ua, ua2, ua3, ua4 = (unit(arousal) for _ in range(4))
    uv, uv2, uv3, uv4 = (unit(valence) for _ in range(4))
    t = np.arange(n) / sr
    n_env = max(2, int(cfg.duration * ENV_RATE))

    # --- arousal: event rate, attack, brightness, noisiness, loudness
    rate = 0.6 * np.exp(2.6 * ua)  # 0.6 .. 8 events/s
    attack_ms = 80 * (1 - ua4) + 3
    decay_ms = 40 + 500 * (1 - ua) ** 2
    env = _interp(_event_envelope(n_env, rate, attack_ms, decay_ms, rng), n)
    sustain = 0.35 * (1 - ua)
    rolloff = 2.6 - 1.9 * ua2  # harmonic amplitude ~ h^-rolloff: small roll-off = bright
    noise_share = 0.05 + 0.75 * ua3
    level_db = -34 + 28 * ua  # foreground level over a fixed background

    # --- valence: register, consonance, mode, roughness, smoothness
    root = 110.0 * 2 ** (2.6 * uv + rng.normal(0, 0.1))
    consonant = rng.random() < uv2
    chords = CONSONANT_CHORDS if consonant else DISSONANT_CHORDS
    chord = list(chords[int(rng.integers(len(chords)))])
    if consonant and chord == [0, 4, 7] and rng.random() > uv3:
        chord = [0, 3, 7]  # minor mode for lower valence
    roughness = (1 - uv3) * 0.9
    beat = rng.uniform(20, 70)
    vibrato_depth = 0.006 * uv4
    tremolo = (1 - uv4) * rng.uniform(0.3, 0.6)

    vib = 1 + vibrato_depth * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    tone = np.zeros(n)
    for semis in chord:
        f = root * 2 ** (semis / 12)
        table = _harmonic_table(rolloff, max(1, min(24, int(14000 / f))))
        for offset, amp in ((0.0, 1.0), (beat, roughness)):
            if amp <= 0:
                continue
            phase = np.cumsum((f + offset) * vib) / sr + rng.random()
            tone += amp * table[(phase * TABLE_SIZE).astype(np.int64) & (TABLE_SIZE - 1)]
    tone /= np.abs(tone).max() + 1e-12
    if tremolo > 0:  # irregular amplitude fluctuation: rough, unsmooth texture
        jitter = _interp(np.abs(rng.standard_normal(n_env // 15 + 2)), n)
        tone *= 1 - tremolo + tremolo * jitter / (jitter.max() + 1e-12)

    noise = _shaped_noise(n, sr, tilt=2.2 - 2.0 * ua2, highpass=100 + 2000 * ua2, rng=rng)
    foreground = (sustain + (1 - sustain) * env) * ((1 - noise_share) * tone + noise_share * 0.5 * noise)
    foreground *= 10 ** (level_db / 20) / (np.sqrt(np.mean(foreground**2)) + 1e-12)
    background = 10 ** (-50 / 20) * _shaped_noise(n, sr, tilt=1.0, highpass=40, rng=rng)  # pink-ish room tone
    return foreground + background


def clips(
    cfg: SyntheticConf,
    data: SyntheticSet | None = None,
    start: int = 0,
    stop: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[np.ndarray]:
    """Audio of clips ``start .. stop - 1`` at ``sample_rate``; clip i has its own seeded generator
    (order-independent)."""
    data = data or make_set(cfg)
    for i in range(start, cfg.n_clips if stop is None else min(stop, cfg.n_clips)):
        rng = np.random.default_rng([cfg.seed, 1, i])
        yield synthesize(float(data.latent_valence[i]), float(data.latent_arousal[i]), cfg, rng, sample_rate)
