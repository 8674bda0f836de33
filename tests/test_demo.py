"""The embedded demo: built once into a cache keyed by the config, then reused without retraining."""

from __future__ import annotations

import json
from dataclasses import replace

from steering import load_model
from steering.assets.demo import DemoAssets, demo_features, demo_key, ensure_demo
from steering.data import FeatureFile


def test_build_then_reuse(tmp_path, monkeypatch, tiny_arch, tiny_demo):
    monkeypatch.setenv("STEERING_CACHE_DIR", str(tmp_path / "cache"))
    assets = ensure_demo(tiny_demo(tmp_path), tiny_arch)
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
    again = ensure_demo(replace(tiny_demo(tmp_path), workers=2, progress=True), tiny_arch)
    assert again == assets and again.info == assets.info


def test_cache_key_follows_the_recipe(tmp_path, tiny_arch, tiny_demo):
    base = tiny_demo(tmp_path)
    key = demo_key(base, tiny_arch)
    assert demo_key(replace(base, cache_dir="/elsewhere", workers=4, progress=True), tiny_arch) == key
    assert demo_key(replace(base, train=replace(base.train, progress=False)), tiny_arch) == key
    assert demo_key(replace(base, synthetic=replace(base.synthetic, seed=1)), tiny_arch) != key
    assert demo_key(base, replace(tiny_arch, embedding_size=32)) != key
    # Keys the sections share with the apps count once set away from the demo's default.
    assert demo_key(replace(base, frontend=replace(base.frontend, resampler="auto")), tiny_arch) == key
    assert demo_key(replace(base, train=replace(base.train, weight_decay=0.1)), tiny_arch) != key
    assert demo_key(replace(base, train=replace(base.train, device="cuda")), tiny_arch) != key


def test_incomplete_build_is_redone(tmp_path, monkeypatch, tiny_arch, tiny_demo):
    monkeypatch.delenv("STEERING_CACHE_DIR", raising=False)
    cfg = tiny_demo(tmp_path)
    features = demo_features(cfg)
    assert features.parent == tmp_path / "from_config"
    stamp = features.stat().st_mtime_ns
    root = features.parent / f"demo-{demo_key(cfg, tiny_arch)}"
    root.mkdir()
    (root / "model.pth").write_bytes(b"half-written")  # no info.json: the build did not finish
    assets = ensure_demo(cfg, tiny_arch)
    load_model(assets.checkpoint)
    assert assets.features == features and features.stat().st_mtime_ns == stamp  # features reused
