"""The embedded demo: built once into a cache keyed by the config, then reused without retraining."""

from __future__ import annotations

import json
from dataclasses import replace

from steering import load_model
from steering.assets.demo import DemoAssets, demo_features, demo_key, ensure_demo
from steering.config.schema import ArchConf, DemoConf, FrontendConf, SyntheticConf, TrainConf
from steering.data import FeatureFile

TINY_ARCH = ArchConf(channels=[4, 8, 8, 16], embedding_size=16, head_hidden=12, mel_bins=64)


def tiny_demo(tmp_path, **train) -> DemoConf:
    return DemoConf(
        cache_dir=str(tmp_path / "from_config"),
        workers=1,
        progress=False,
        synthetic=SyntheticConf(n_clips=30, duration=0.7, seed=0),
        frontend=FrontendConf(frames=64),
        train=TrainConf(epochs=1, batch_size=8, num_threads=1, device="cpu", **train),
    )


def test_build_then_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path / "cache"))
    assets = ensure_demo(tiny_demo(tmp_path), TINY_ARCH)
    assert isinstance(assets, DemoAssets)
    assert assets.features.parent == tmp_path / "cache"  # the env variable overrides cache_dir
    assert not (tmp_path / "from_config").exists()
    with FeatureFile(assets.features) as ff:
        assert len(ff) == 30 and ff.frames == 64
    model = load_model(assets.checkpoint)
    assert model.config.channels == (4, 8, 8, 16)
    info = json.loads((assets.checkpoint.parent / "info.json").read_text())
    for key in ("test_r_valence", "test_r_arousal", "test_feedback_effect_valence", "best_val_pearson"):
        assert key in info and key in assets.info
    assert info["test_feedback_effect_valence"] > 0  # the model's own feedback moves its output

    import steering.assets.demo as demo_module

    def no_training(*args, **kwargs):
        raise AssertionError("a cached demo must not be retrained")

    monkeypatch.setattr(demo_module, "train_model", no_training)
    monkeypatch.setattr(demo_module, "prepare_synthetic", no_training)
    again = ensure_demo(replace(tiny_demo(tmp_path), workers=2, progress=True), TINY_ARCH)
    assert again == assets and again.info == assets.info


def test_cache_key_follows_the_recipe(tmp_path):
    base = tiny_demo(tmp_path)
    key = demo_key(base, TINY_ARCH)
    assert demo_key(replace(base, cache_dir="/elsewhere", workers=4, progress=True), TINY_ARCH) == key
    assert demo_key(replace(base, train=replace(base.train, progress=False)), TINY_ARCH) == key
    assert demo_key(replace(base, synthetic=replace(base.synthetic, seed=1)), TINY_ARCH) != key
    assert demo_key(base, replace(TINY_ARCH, embedding_size=32)) != key
    # Keys the sections share with the apps count once set away from the demo's default.
    assert demo_key(replace(base, frontend=replace(base.frontend, resampler="auto")), TINY_ARCH) == key
    assert demo_key(replace(base, train=replace(base.train, weight_decay=0.1)), TINY_ARCH) != key
    assert demo_key(replace(base, train=replace(base.train, device="cuda")), TINY_ARCH) != key


def test_incomplete_build_is_redone(tmp_path, monkeypatch):
    monkeypatch.delenv("STEERING_CACHE_DIR", raising=False)
    cfg = tiny_demo(tmp_path)
    features = demo_features(cfg)
    assert features.parent == tmp_path / "from_config"
    stamp = features.stat().st_mtime_ns
    root = features.parent / f"demo-{demo_key(cfg, TINY_ARCH)}"
    root.mkdir()
    (root / "model.pth").write_bytes(b"half-written")  # no info.json: the build did not finish
    assets = ensure_demo(cfg, TINY_ARCH)
    load_model(assets.checkpoint)
    assert assets.features == features and features.stat().st_mtime_ns == stamp  # features reused
