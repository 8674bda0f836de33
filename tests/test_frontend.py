"""The log-mel front end agrees with librosa and handles padding, mixdown and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from steering.audio.frontend import AudioError, LogMel, load_audio, mel_filterbank
from steering.config.schema import FrontendConf

librosa = pytest.importorskip("librosa")
SR = 32000


def _librosa_db(y: np.ndarray, cfg: FrontendConf) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.mel_bins,
        fmin=cfg.fmin, fmax=cfg.fmax, power=2.0,
    )  # fmt: skip
    return librosa.power_to_db(mel, ref=np.max, top_db=cfg.top_db).T


def _test_signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3150 * t) * (t > seconds / 2)
    y += 0.02 * rng.standard_normal(t.size) * np.linspace(0, 1, t.size)
    y[: SR // 10] = 0.0  # digital silence: exercises the floor
    return y


def test_mel_filterbank_matches_librosa():
    cfg = FrontendConf()
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.mel_bins, fmin=cfg.fmin, fmax=cfg.fmax)
    np.testing.assert_allclose(mel_filterbank(cfg), ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seconds", [1.0, 1.37])
def test_matches_librosa_within_0_01_db(seconds):
    cfg = FrontendConf(frames=400)
    y = _test_signal(seconds)
    ours = LogMel(cfg)(y)
    ref = _librosa_db(y, cfg)
    assert ref.shape[0] < 400
    np.testing.assert_array_less(np.abs(ours[: ref.shape[0]] - ref), 0.01)
    assert ours.max() == pytest.approx(0.0) and ref.min() == pytest.approx(-80.0)


def test_pads_with_floor_and_cuts():
    y = _test_signal(1.0)
    feats = LogMel(FrontendConf(frames=200))(y)
    n = 1 + len(y) // 320
    assert feats.shape == (200, 64) and feats.dtype == np.float32
    assert np.all(feats[n:] == -80.0)
    old = LogMel(FrontendConf(frames=200, pad_with_floor=False))(y)
    assert np.all(old[n:] == 0.0)
    np.testing.assert_array_equal(old[:n], feats[:n])
    cut = LogMel(FrontendConf(frames=50))(y)
    np.testing.assert_array_equal(cut, feats[:50])


@pytest.mark.parametrize("resampler", ["poly", "auto"])
def test_file_mixdown_and_resampling(tmp_path, resampler):
    cfg = FrontendConf(frames=120, resampler=resampler)
    y32 = _test_signal(1.0)
    stereo = np.stack([y32 * 1.5, y32 * 0.5], axis=1)  # mean == y32
    sf.write(tmp_path / "stereo.wav", stereo.astype(np.float32), SR, subtype="FLOAT")
    direct = LogMel(cfg)(y32)
    np.testing.assert_allclose(LogMel(cfg).file(tmp_path / "stereo.wav"), direct, atol=1e-3)
    # The same tone recorded at 16 kHz lands in the same mel bins once resampled to 32 kHz.
    t16 = np.arange(16000) / 16000
    sf.write(tmp_path / "tone16k.flac", 0.5 * np.sin(2 * np.pi * 1000 * t16), 16000)
    loaded = load_audio(tmp_path / "tone16k.flac", SR, resampler)
    assert loaded.shape == (32000,)
    t32 = np.arange(32000) / SR
    ref = LogMel(cfg)(0.5 * np.sin(2 * np.pi * 1000 * t32))
    ours = LogMel(cfg).file(tmp_path / "tone16k.flac")
    assert np.argmax(ours[50]) == np.argmax(ref[50])
    strong = ref[10:90] > -40  # where the tone lives, the resampled clip matches within 0.5 dB
    np.testing.assert_allclose(ours[10:90][strong], ref[10:90][strong], atol=0.5)


@pytest.mark.parametrize("rate", [44100, 16000])
def test_resampled_file_matches_librosa_load(tmp_path, rate):
    """With soxr (librosa.load's resampler) a 44.1 kHz stereo file matches librosa end to end."""
    pytest.importorskip("soxr")
    rng = np.random.default_rng(1)
    t = np.arange(int(rate * 1.2)) / rate
    y = 0.3 * np.sin(2 * np.pi * 700 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(t.size)
    sf.write(tmp_path / "x.wav", np.stack([y, 0.5 * y], axis=1), rate, subtype="PCM_16")
    cfg = FrontendConf(frames=150)
    ours = LogMel(cfg).file(tmp_path / "x.wav")
    ref = _librosa_db(librosa.load(tmp_path / "x.wav", sr=SR)[0], cfg)
    np.testing.assert_array_less(np.abs(ours[: ref.shape[0]] - ref), 0.01)


def test_bad_audio_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="broken.wav"):
        LogMel().file(bad)


def test_unknown_frontend_key():
    with pytest.raises(TypeError, match="hop"):
        FrontendConf(hop=10)
    with pytest.raises(ValueError, match="resampler"):
        FrontendConf(resampler="linear")
