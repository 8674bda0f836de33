"""steering.prepare: audio folder + Emo-Soundscapes CSVs -> reference feature file."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from steering.audio.folder import PrepareError, prepare_folder, read_ratings
from steering.audio.frontend import LogMel
from steering.config.schema import FolderSourceConf, FrontendConf, PrepareConfig, SyntheticSourceConf
from steering.data import FeatureFile
from steering.prepare import run

SR = 32000
FE = FrontendConf(frames=40)
ROOT = Path(__file__).resolve().parents[1]


def _tone(freq: float, seconds: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return 0.3 * np.sin(2 * np.pi * freq * t)


@pytest.fixture
def audio_folder(tmp_path):
    """Nested folder: wav, flac, 44.1 kHz stereo ogg, one unrated file; one rated name has no audio."""
    root = tmp_path / "audio"
    (root / "nature" / "birds").mkdir(parents=True)
    (root / "urban").mkdir()
    sf.write(root / "nature" / "birds" / "a.wav", _tone(440), SR)
    sf.write(root / "urban" / "b.flac", _tone(880), SR)
    stereo = np.stack([_tone(660, sr=44100), _tone(660, sr=44100)], axis=1)
    sf.write(root / "urban" / "c.ogg", stereo, 44100)
    sf.write(root / "urban" / "unrated.wav", _tone(220), SR)
    (root / "Valence.csv").write_text("a.wav,0.5\nb.flac,-0.25\nc.ogg,0.1\nghost.wav,0.3\n")
    (root / "Arousal.csv").write_text("a.wav,-0.5\nb.flac,0.75\nc.ogg,0.0\nghost.wav,0.2\n")
    return root


def test_folder_to_feature_file(audio_folder, tmp_path, caplog):
    out = tmp_path / "features.h5"
    with caplog.at_level(logging.WARNING, logger="steering.prepare"):
        path, match = prepare_folder(audio_folder, out, FE, progress=False)
    assert match.audio_without_ratings == ["urban/unrated.wav"]
    assert match.ratings_without_audio == ["ghost.wav"]
    assert "unrated.wav" in caplog.text and "ghost.wav" in caplog.text
    with FeatureFile(path) as ff:
        assert ff.audio_names == ["a.wav", "b.flac", "c.ogg"]
        np.testing.assert_allclose(ff.valence, [0.5, -0.25, 0.1])
        np.testing.assert_allclose(ff.arousal, [-0.5, 0.75, 0.0])
        batch = ff.read([0, 1, 2])
    front = LogMel(FrontendConf(frames=40))
    stored, _ = sf.read(audio_folder / "nature" / "birds" / "a.wav")  # 16-bit PCM as written
    np.testing.assert_allclose(batch.features[0].numpy(), front(stored), atol=1e-4)
    assert batch.features.shape == (3, 40, 64)
    assert np.all(batch.features[:, 31:].numpy() == -80.0)  # 0.3 s = 31 frames, then the floor
    # The 44.1 kHz stereo ogg was resampled: its tone sits in the same mel bin as a 32 kHz render.
    assert np.argmax(batch.features[2, 15]) == np.argmax(front(_tone(660))[15])
    assert not list(tmp_path.glob("*.tmp"))


def test_strict_and_nothing_matched(audio_folder, tmp_path):
    with pytest.raises(PrepareError, match="strict"):
        prepare_folder(audio_folder, tmp_path / "f.h5", FE, strict=True, progress=False)
    (audio_folder / "Valence.csv").write_text("zzz.wav,0.1\n")
    (audio_folder / "Arousal.csv").write_text("zzz.wav,0.1\n")
    with pytest.raises(PrepareError, match="no audio file matches"):
        prepare_folder(audio_folder, tmp_path / "f.h5", FE, progress=False)
    assert not (tmp_path / "f.h5").exists()


def test_malformed_ratings_name_file_and_line(tmp_path):
    bad = tmp_path / "Valence.csv"
    bad.write_text("a.wav,0.1\nb.wav,high\n")
    with pytest.raises(PrepareError, match=r"Valence.csv:2: rating 'high'"):
        read_ratings(bad)
    bad.write_text("a.wav,nan\n")
    with pytest.raises(PrepareError, match="Valence.csv:1"):
        read_ratings(bad)
    with pytest.raises(PrepareError, match="not found"):
        read_ratings(tmp_path / "Arousal.csv")


def test_write_is_atomic(audio_folder, tmp_path, monkeypatch):
    out = tmp_path / "features.h5"
    out.write_bytes(b"previous")

    def boom(self, path):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(LogMel, "file", boom)
    with pytest.raises(RuntimeError):
        prepare_folder(audio_folder, out, FE, progress=False)
    assert out.read_bytes() == b"previous"


def test_run_synthetic_source(tmp_path):
    source = SyntheticSourceConf(n_clips=5, duration=0.2, seed=1, workers=1)
    with FeatureFile(run(PrepareConfig(source=source, frontend=FE, output=str(tmp_path / "syn.h5")))) as ff:
        assert len(ff) == 5 and ff.frames == 40
        assert ff.audio_names[0] == "synth_00000.wav"


def test_hydra_cli(audio_folder, tmp_path):
    out = tmp_path / "cli.h5"
    cmd = [sys.executable, "-m", "steering.prepare", f"source.audio_dir={audio_folder}", f"output={out}",
           "frontend.frames=40", f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with FeatureFile(out) as ff:
        assert len(ff) == 3


def test_missing_audio_dir_is_named(tmp_path):
    with pytest.raises(PrepareError, match="source.audio_dir"):
        run(PrepareConfig(source=FolderSourceConf(audio_dir=None), frontend=FE, output=str(tmp_path / "x.h5")))
    with pytest.raises(PrepareError, match="audio folder not found"):
        run(PrepareConfig(source=FolderSourceConf(audio_dir=str(tmp_path / "nope")), output=str(tmp_path / "x.h5")))
