"""Caches are verified on use: a corrupt or altered entry is rebuilt with a warning, never trusted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steering.data.binning import Binning
from steering.engine import store
from steering.engine.core import SharedPass
from steering.engine.store import ChunkMemory, SharedPassStore, shared_key
from steering.signals import SignalSet, cached_signals


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
    again = SharedPassStore(key, tmp_path, "cpu")
    assert float(again.get(0, lambda: _shared(9.0)).baseline["valence"][0]) == 1.0
    assert again.hits["disk"] == 1
    # Replace the chunk with other (valid) numbers: the checksum no longer matches.
    torch.save(_shared(5.0).state(), path)
    third = SharedPassStore(key, tmp_path, "cpu")
    assert float(third.get(0, lambda: _shared(1.0)).baseline["valence"][0]) == 1.0
    assert third.hits["computed"] == 1 and "checksum" in caplog.text


def test_chunks_are_shared_through_the_sweeps_memory_not_the_process(tmp_path):
    key = shared_key(model="m", data="d")
    memory = ChunkMemory()
    SharedPassStore(key, None, "cpu", memory=memory).get(0, lambda: _shared(1.0))
    same_sweep = SharedPassStore(key, None, "cpu", memory=memory)
    assert float(same_sweep.get(0, lambda: _shared(9.0)).baseline["valence"][0]) == 1.0
    assert same_sweep.hits["memory"] == 1
    other_sweep = SharedPassStore(key, None, "cpu")  # no disk cache, a memory of its own: computed again
    assert float(other_sweep.get(0, lambda: _shared(9.0)).baseline["valence"][0]) == 9.0


def test_chunk_memory_keeps_the_most_recent_chunks_within_its_budget():
    one = _shared(1.0)
    size = sum(t.numel() * t.element_size() for t in [*one.first.values(), *one.baseline.values(), one.prefix])
    memory = ChunkMemory(budget=2 * size)
    for chunk in range(3):
        memory.put(("k", chunk), _shared(float(chunk)))
    assert memory.get(("k", 0)) is None and memory.get(("k", 2)) is not None
    assert len(memory) == 2 and memory.used <= memory.budget


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
    assert len(builds) == 2 and "does not match its checksum" in caplog.text
    assert signals.vectors["positive_moderate"]["valence"][0] == 0.5
    # An entry cached before checksums existed is still guarded by its recorded fingerprint.
    path.with_name(path.name + ".sha256").unlink()
    raw = json.loads(path.read_text())
    raw["positive_moderate"]["valence_128d"][0] = 7.0
    path.write_text(json.dumps(raw))
    caplog.clear()
    signals = cached_signals("m", "d", [0, 1, 2], binning, tmp_path, build)
    assert len(builds) == 3 and "recorded fingerprint" in caplog.text
    assert signals.vectors["positive_moderate"]["valence"][0] == 0.5


def test_altered_reference_activations_are_recomputed(tmp_path, monkeypatch, caplog):
    from steering.signals import reference

    calls = []

    def pass1(model, ff, indices, **kwargs):
        calls.append(1)
        return {p: np.full((len(indices), 128), float(len(calls)), dtype=np.float32) for p in ("valence", "arousal")}

    monkeypatch.setattr(reference, "pass1_activations", pass1)
    kwargs = dict(model_hash="m", data_hash="d", batch_size=4, device="cpu", cache_dir=tmp_path)
    indices = np.array([1, 2, 3])
    first = reference.reference_activations(None, None, indices, **kwargs)
    again = reference.reference_activations(None, None, indices, **kwargs)
    assert len(calls) == 1 and np.array_equal(again["valence"], first["valence"])
    (path,) = (tmp_path / "activations").glob("pass1_*.npz")
    altered = {p: np.full((3, 128), 5.0, dtype=np.float32) for p in ("valence", "arousal")}
    np.savez(path, **altered)  # a valid file, but not what was computed
    rebuilt = reference.reference_activations(None, None, indices, **kwargs)
    assert len(calls) == 2 and "does not match its checksum" in caplog.text
    assert float(rebuilt["valence"][0, 0]) == 2.0


def test_altered_demo_features_and_model_are_rebuilt(tmp_path, monkeypatch, caplog, tiny_arch, tiny_demo):
    from steering.assets.demo import ensure_demo

    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path / "cache"))
    assets = ensure_demo(tiny_demo(tmp_path), tiny_arch)
    model_bytes = assets.checkpoint.read_bytes()
    with open(assets.checkpoint, "r+b") as fh:  # flip bytes inside the checkpoint
        fh.seek(len(model_bytes) // 2)
        fh.write(b"\x00" * 64)
    rebuilt = ensure_demo(tiny_demo(tmp_path), tiny_arch)
    assert "demo model" in caplog.text and "does not match its checksum" in caplog.text
    from steering import load_model

    load_model(rebuilt.checkpoint)  # a whole, loadable model again
    caplog.clear()
    with open(assets.features, "r+b") as fh:
        fh.seek(assets.features.stat().st_size - 128)
        fh.write(b"\x01" * 64)
    ensure_demo(tiny_demo(tmp_path), tiny_arch)
    assert "synthetic features" in caplog.text and "does not match its checksum" in caplog.text


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from steering.util.files import atomic_path, atomic_write_text

    target = atomic_write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_checkpoint_has_the_same_bytes_whichever_process_writes_it(tmp_path, tiny_arch):
    """The demo model's checksum and cache must not depend on the temporary name used while writing."""
    from steering.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(tiny_arch)
    first = save_checkpoint(model, tmp_path / "a" / "model.pth", epoch=1)
    second = save_checkpoint(model, tmp_path / "b" / "model.pth", epoch=1)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.pth"]
