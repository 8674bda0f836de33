"""Caches are verified on use: a corrupt or altered entry is rebuilt with a warning, never trusted."""

from __future__ import annotations

import json

import numpy as np
import torch

from steering.data.binning import Binning
from steering.engine import store
from steering.engine.core import SharedPass
from steering.engine.store import SharedPassStore, shared_key
from steering.signals import SignalSet, cached_signals
from tests.test_demo import TINY_ARCH, tiny_demo


def _shared(value: float) -> SharedPass:
    t = torch.full((2, 1), value)
    return SharedPass(
        first={"valence": t, "arousal": t},
        baseline={"valence": t, "arousal": t},
        own_modulations={},
        prefix=torch.zeros(2, 3),
        start_block=0,
    )


def test_altered_shared_work_chunk_is_recomputed(tmp_path, caplog):
    key = shared_key(model="m", data="d")
    first = SharedPassStore(key, tmp_path, "cpu")
    first.get(0, lambda: _shared(1.0))
    path = tmp_path / "shared" / key / "chunk_00000.pt"
    assert path.is_file() and path.with_name(path.name + ".sha256").is_file()
    store.clear_memory()
    again = SharedPassStore(key, tmp_path, "cpu")
    assert float(again.get(0, lambda: _shared(9.0)).baseline["valence"][0]) == 1.0
    assert again.hits["disk"] == 1
    # Replace the chunk with other (valid) numbers: the checksum no longer matches.
    torch.save(_shared(5.0).state(), path)
    store.clear_memory()
    third = SharedPassStore(key, tmp_path, "cpu")
    assert float(third.get(0, lambda: _shared(1.0)).baseline["valence"][0]) == 1.0
    assert third.hits["computed"] == 1 and "checksum" in caplog.text


def test_the_cache_format_is_part_of_the_shared_key(monkeypatch):
    key = shared_key(model="m")
    monkeypatch.setattr(store, "CACHE_FORMAT", store.CACHE_FORMAT + 1)
    assert shared_key(model="m") != key


def _signal_set(value: float) -> SignalSet:
    vec = {"valence": np.full(128, value), "arousal": np.full(128, -value)}
    return SignalSet(binning_name="9bin", vectors={"positive_moderate": vec}, counts={"positive_moderate": 5})


def test_altered_cached_signals_are_rebuilt(tmp_path, caplog):
    binning = Binning(
        name="9bin",
        valence_thresholds=(-0.3, 0.3),
        valence_names=("negative", "neutral", "positive"),
        arousal_thresholds=(-0.3, 0.3),
        arousal_names=("weak", "moderate", "strong"),
        min_samples=1,
    )
    builds = []

    def build():
        builds.append(1)
        return _signal_set(0.5)

    cached_signals("m", "d", [0, 1, 2], binning, tmp_path, build)
    cached_signals("m", "d", [0, 1, 2], binning, tmp_path, build)
    assert len(builds) == 1
    (path,) = tmp_path.glob("signals_9bin_*.json")
    raw = json.loads(path.read_text())
    raw["positive_moderate"]["valence_128d"][0] = 7.0  # still a valid file, but not what was computed
    path.write_text(json.dumps(raw))
    signals = cached_signals("m", "d", [0, 1, 2], binning, tmp_path, build)
    assert len(builds) == 2 and "recorded fingerprint" in caplog.text
    assert signals.vectors["positive_moderate"]["valence"][0] == 0.5


def test_altered_demo_features_and_model_are_rebuilt(tmp_path, monkeypatch, caplog):
    from steering.assets.demo import ensure_demo

    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path / "cache"))
    assets = ensure_demo(tiny_demo(tmp_path), TINY_ARCH)
    model_bytes = assets.checkpoint.read_bytes()
    with open(assets.checkpoint, "r+b") as fh:  # flip bytes inside the checkpoint
        fh.seek(len(model_bytes) // 2)
        fh.write(b"\x00" * 64)
    rebuilt = ensure_demo(tiny_demo(tmp_path), TINY_ARCH)
    assert "demo model" in caplog.text and "does not match its checksum" in caplog.text
    from steering import load_model

    load_model(rebuilt.checkpoint)  # a whole, loadable model again
    caplog.clear()
    with open(assets.features, "r+b") as fh:
        fh.seek(assets.features.stat().st_size - 128)
        fh.write(b"\x01" * 64)
    ensure_demo(tiny_demo(tmp_path), TINY_ARCH)
    assert "synthetic features" in caplog.text and "does not match its checksum" in caplog.text
