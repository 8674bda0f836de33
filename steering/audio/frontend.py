"""Log-mel front end of the reference feature file (docs/formats.md, "Feature file"), in numpy/torch only."""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from steering.config.schema import FrontendConf
from steering.errors import SteeringError

AMIN = 1e-10  # librosa.power_to_db's floor on power before the log


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


def mel_filterbank(cfg: FrontendConf) -> np.ndarray:
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


class AudioError(SteeringError, ValueError):
    """An audio file that cannot be read or holds no usable samples."""


def load_audio(path: str | Path, sample_rate: int, resampler: str = "auto") -> np.ndarray:
    """Read any soundfile-supported file, mix down to mono and resample to ``sample_rate`` (float64)."""
    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: file holds no samples")
    mono = data.mean(axis=1)
    return resample(mono, rate, sample_rate, resampler)


def _soxr() -> Any | None:
    try:
        import soxr
    except ImportError:
        return None
    return soxr


def resample(signal: np.ndarray, orig_rate: int, target_rate: int, resampler: str = "auto") -> np.ndarray:
    """Resample with soxr (``soxr_hq``, as ``librosa.load`` does) or scipy's polyphase ``resample_poly``.

    ``auto`` uses soxr when it is installed, so features of non-32 kHz files match librosa's;
    ``resample_poly`` differs from it by up to ~0.1 dB in loud cells and more near the floor.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if orig_rate == target_rate:
        return signal
    soxr = _soxr() if resampler in ("auto", "soxr_hq") else None
    if resampler == "soxr_hq" and soxr is None:
        raise ImportError("resampler='soxr_hq' needs the soxr package (pip install soxr)")
    if soxr is not None:
        return soxr.resample(signal, orig_rate, target_rate, quality="soxr_hq")
    g = gcd(int(orig_rate), int(target_rate))
    return resample_poly(np.asarray(signal, dtype=np.float64), int(target_rate) // g, int(orig_rate) // g)


class LogMel:
    """Waveform -> (frames, mel_bins) float32 log-mel, as librosa's melspectrogram + power_to_db(ref=np.max).

    STFT: periodic Hann window, centred frames with zero (constant) padding, power spectrogram;
    Slaney mel filters; dB relative to the clip's maximum with a ``top_db`` floor. The output is
    cut or padded to ``frames`` with the floor value (or 0 dB when ``pad_with_floor`` is off).
    """

    def __init__(self, cfg: FrontendConf | None = None) -> None:
        self.cfg = cfg if cfg is not None else FrontendConf()
        self._window = torch.hann_window(self.cfg.n_fft, periodic=True, dtype=torch.float64)
        self._mel = torch.as_tensor(mel_filterbank(self.cfg), dtype=torch.float64)

    def power_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, samples) float64 -> (B, frames, mel_bins) mel power spectrogram."""
        spec = torch.stft(
            waveforms,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.n_fft,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real**2 + spec.imag**2  # (B, freq, frames)
        return torch.matmul(self._mel, power).transpose(1, 2)

    def to_db(self, mel_power: torch.Tensor) -> torch.Tensor:
        """power_to_db(ref=max, amin=1e-10, top_db) per clip, on (B, frames, mel)."""
        log_spec = 10.0 * torch.log10(torch.clamp(mel_power, min=AMIN))
        ref = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = log_spec - ref
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - self.cfg.top_db
        return torch.maximum(log_spec, floor)

    def fit_frames(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Cut or pad (B, t, mel) to (B, frames, mel); padding with the floor (-top_db) or 0 dB."""
        frames = self.cfg.frames
        if log_mel.shape[1] >= frames:
            return log_mel[:, :frames]
        pad_value = -float(self.cfg.top_db) if self.cfg.pad_with_floor else 0.0
        pad = log_mel.new_full((log_mel.shape[0], frames - log_mel.shape[1], log_mel.shape[2]), pad_value)
        return torch.cat([log_mel, pad], dim=1)

    def batch(self, waveforms: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, samples) equal-length waveforms at ``cfg.sample_rate`` -> (B, frames, mel) float32."""
        x = torch.as_tensor(np.asarray(waveforms), dtype=torch.float64)
        if x.ndim != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("waveforms have no samples")
        out = self.fit_frames(self.to_db(self.power_mel(x)))
        return out.to(torch.float32).numpy()

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """One mono waveform -> (frames, mel) float32."""
        return self.batch(np.asarray(waveform, dtype=np.float64)[None])[0]

    def file(self, path: str | Path) -> np.ndarray:
        """Features of an audio file (mono mixdown, resampled to ``cfg.sample_rate``)."""
        waveform = load_audio(path, self.cfg.sample_rate, self.cfg.resampler)
        if not np.isfinite(waveform).all():
            raise AudioError(f"{path}: audio holds NaN/inf samples")
        return self(waveform)
