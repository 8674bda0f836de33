"""Log-mel front end of the reference feature file (reference-model.md §2), in numpy/torch only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class FrontEndConfig:
    """Parameters the users' feature file was made with."""

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    top_db: float = 80.0
    frames: int = 1000
    pad_with_floor: bool = True  # False reproduces the old 0-dB padding

    def to_dict(self) -> dict:
        return asdict(self)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = freq / f_sp
    log_part = min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep
    return np.where(freq >= min_log_hz, log_part, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(cfg: FrontEndConfig) -> np.ndarray:
    """Slaney-normalised triangular filters, shape (mel_bins, n_fft // 2 + 1), like librosa's default."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.mel_bins + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    weights = np.zeros((cfg.mel_bins, len(fft_freqs)))
    for i in range(cfg.mel_bins):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : cfg.mel_bins + 2] - mel_points[: cfg.mel_bins]))[:, None]
    return weights
