"""Signals: the users' JSON layout, extraction from pass 1, splits, caching, diagnostics and the app."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from steering.data import FeatureFile, split_indices
from steering.data.binning import Binning
from steering.signals import (
    SignalFileError,
    SignalSet,
    cache_key,
    cached_signals,
    extract_signals,
    load_signals,
    save_signals,
    signal_diagnostics,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def bin9() -> Binning:
    return Binning.load(CONF / "binning" / "9bin.yaml")


@pytest.fixture
def bin25() -> Binning:
    return Binning.load(CONF / "binning" / "25bin.yaml")


def users_layout(categories, seed=0, extra=True) -> dict:
    """A signal file as the earlier pipeline wrote it: categories plus metadata and generation_config."""
    rng = np.random.default_rng(seed)
    data: dict = {
        c: {
            "valence_128d": rng.normal(size=128).tolist(),
            "arousal_128d": rng.normal(size=128).tolist(),
            "samples_count": 20 + i,
            **({"category": c, "valence_range": [-1, 1]} if extra else {}),
        }
        for i, c in enumerate(categories)
    }
    data["metadata"] = {"created": "2024-01-01", "binning": "9bin", "note": "old pipeline"}
    data["generation_config"] = {"checkpoint": "/abs/path/best.pth", "forward_passes": 1}
    data["version"] = "1.0"  # a stray non-dict key
    return data


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- loading
def test_load_users_9bin_file(tmp_path, bin9):
    cats = ["negative_strong", "neutral_moderate", "positive_weak"]
    raw = users_layout(cats)
    signals = load_signals(write_json(tmp_path / "steering_signal_pairs_9bin.json", raw), bin9)
    assert set(signals.categories) == set(cats)
    assert signals.categories == tuple(c for c in bin9.categories if c in cats)  # the scheme's order
    assert signals.counts == {c: raw[c]["samples_count"] for c in cats}
    expected = raw["neutral_moderate"]["arousal_128d"]
    np.testing.assert_array_equal(signals.vector("neutral_moderate", "arousal"), expected)
    assert signals.matrix("valence").shape == (3, 128)
    assert signals.metadata["note"] == "old pipeline"
    assert signals.generation_config == raw["generation_config"]
    assert signals.binning_name == "9bin"


def test_load_25bin_file_with_middle_spelling(tmp_path, bin25):
    cats = ["neutral_middle", "very_negative_middle", "positive_strong"]
    signals = load_signals(write_json(tmp_path / "pairs_25bin.json", users_layout(cats)), bin25)
    assert set(signals.categories) == {"neutral_moderate", "very_negative_moderate", "positive_strong"}


def test_loaded_signals_are_not_filtered_by_min_samples(tmp_path, bin9):
    raw = users_layout(["negative_weak", "neutral_moderate"])
    raw["negative_weak"]["samples_count"] = 2  # below min_samples = 15, kept as it is
    signals = load_signals(write_json(tmp_path / "s.json", raw), bin9)
    assert "negative_weak" in signals and signals.counts["negative_weak"] == 2


def test_round_trip_keeps_keys_and_values(tmp_path, bin9):
    raw = users_layout(["negative_strong", "neutral_moderate"])
    first = load_signals(write_json(tmp_path / "in.json", raw), bin9)
    out = save_signals(first, tmp_path / "out.json")
    written = json.loads(out.read_text())
    assert set(written) == set(raw) - {"version"}
    for cat in ("negative_strong", "neutral_moderate"):
        assert set(written[cat]) == set(raw[cat])
    assert written["generation_config"] == raw["generation_config"]
    assert written["metadata"]["note"] == "old pipeline" and "diagnostics" in written["metadata"]
    second = load_signals(out, bin9)
    assert second.fingerprint() == first.fingerprint()
    assert second.counts == first.counts
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["neutral_moderate"].pop("valence_128d"), "missing valence_128d"),
        (lambda d: d["neutral_moderate"]["arousal_128d"].pop(), "128 numbers"),
        (lambda d: d["neutral_moderate"]["valence_128d"].__setitem__(3, float("nan")), "NaN"),
        (lambda d: d["neutral_moderate"].__setitem__("valence_128d", "abc"), "not a list of numbers"),
        (lambda d: d.__setitem__("happy_loud", d["neutral_moderate"]), "unknown category 'happy_loud'"),
        (lambda d: d["neutral_moderate"].__setitem__("samples_count", -1), "samples_count"),
    ],
)
def test_malformed_files_name_path_and_problem(tmp_path, bin9, mutate, message):
    raw = users_layout(["neutral_moderate", "positive_strong"])
    mutate(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))  # json writes NaN as NaN, which Python reads back
    with pytest.raises(SignalFileError, match=message) as info:
        load_signals(path, bin9)
    assert str(path) in str(info.value)


def test_not_json_and_missing_file(tmp_path, bin9):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(SignalFileError, match="not a JSON file") as info:
        load_signals(path, bin9)
    assert str(path) in str(info.value)
    with pytest.raises(SignalFileError, match="not found"):
        load_signals(tmp_path / "missing.json", bin9)
    empty = write_json(tmp_path / "empty.json", {"metadata": {}, "generation_config": {}})
    with pytest.raises(SignalFileError, match="no category signals"):
        load_signals(empty, bin9)


def test_duplicate_spellings_are_an_error(tmp_path, bin25):
    raw = users_layout(["neutral_middle", "neutral_moderate"])
    with pytest.raises(SignalFileError, match="appears twice"):
        load_signals(write_json(tmp_path / "dup.json", raw), bin25)


# --------------------------------------------------------------------------- extraction
@pytest.fixture
def ff(feature_file):
    with FeatureFile(feature_file) as f:
        yield f


def test_extraction_is_the_mean_pass1_activation(tiny_model, ff, bin9):
    indices = np.arange(len(ff))
    signals = extract_signals(tiny_model, ff, indices, bin9, batch_size=7, min_samples=1, provenance={"split": "all"})
    labels = bin9.categorize(ff.valence, ff.arousal)
    with torch.no_grad():
        out = tiny_model.feedforward(ff.read(indices).features)  # pass 1: no feedback
    assert set(signals.categories) == set(labels)
    for cat in signals.categories:
        mask = labels == cat
        assert signals.counts[cat] == mask.sum()
        for pathway in ("valence", "arousal"):
            expected = out[f"{pathway}_128d"][torch.from_numpy(mask)].double().mean(0).numpy()
            np.testing.assert_allclose(signals.vector(cat, pathway), expected, rtol=1e-5, atol=1e-6)
    full = tiny_model(ff.read(indices).features)  # two passes: feedback changes the activations
    assert not torch.allclose(full["valence_128d"], out["valence_128d"])


def test_extraction_restores_model_mode_and_parameters(tiny_model, ff, bin9):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()
    extract_signals(tiny_model, ff, np.arange(len(ff)), bin9, min_samples=1, provenance={})
    assert tiny_model.training
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval mode: BN statistics untouched


def test_min_samples_drops_small_categories(tiny_model, ff, bin9):
    labels = bin9.categorize(ff.valence, ff.arousal)
    names, sizes = np.unique(labels, return_counts=True)
    cut = int(np.median(sizes))
    signals = extract_signals(tiny_model, ff, np.arange(len(ff)), bin9, min_samples=cut, provenance={})
    assert set(signals.categories) == {n for n, s in zip(names, sizes) if s >= cut}
    assert set(signals.metadata["dropped"]) == {n for n, s in zip(names, sizes) if s < cut}
    assert signals.metadata["counts"] == {c: int((labels == c).sum()) for c in bin9.categories}
    with pytest.raises(ValueError, match="no category"):
        extract_signals(tiny_model, ff, np.arange(len(ff)), bin9, provenance={})  # default 15: none qualifies


def test_train_split_signals_contain_no_test_sample(tiny_model, ff, bin9, tmp_path):
    train = split_indices(len(ff), "train")
    test = split_indices(len(ff), "test")
    signals = extract_signals(tiny_model, ff, train, bin9, min_samples=1, provenance={"split": "train"})
    path = save_signals(signals, tmp_path / "train.json")
    meta = load_signals(path, bin9).metadata
    used = set(meta["indices"])
    assert used == set(train.tolist()) and not used & set(test.tolist())
    assert meta["split"] == "train" and meta["leakage"] is False
    assert sum(signals.counts.values()) <= len(train)
    leaky = extract_signals(tiny_model, ff, np.arange(len(ff)), bin9, min_samples=1, provenance={"split": "all"})
    assert leaky.metadata["leakage"] is True


def test_saved_provenance(tiny_model, ff, bin9, tmp_path):
    prov = {"split": "train", "checkpoint_hash": "abc123"}
    signals = extract_signals(tiny_model, ff, split_indices(len(ff), "train"), bin9, min_samples=1, provenance=prov)
    meta = json.loads(save_signals(signals, tmp_path / "s.json").read_text())["metadata"]
    keys = ("checkpoint_hash", "data_hash", "split", "binning", "counts", "leakage", "created", "framework_version")
    assert all(key in meta for key in keys), set(keys) - set(meta)
    assert meta["data_hash"] == ff.fingerprint() and meta["checkpoint_hash"] == "abc123"
    assert meta["diagnostics"]["valence_separation_ratio"] >= 0


# --------------------------------------------------------------------------- diagnostics
def _set(vectors: dict[str, np.ndarray]) -> SignalSet:
    return SignalSet("t", {c: {"valence": v, "arousal": v.copy()} for c, v in vectors.items()}, {c: 1 for c in vectors})


def test_identical_signals_have_zero_separation():
    v = np.random.default_rng(0).normal(size=128)
    signals = _set({"a_x": v, "b_x": v.copy(), "c_x": v.copy()})
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(60, 128))
    noise -= noise.mean(0)
    labels = np.repeat(["a_x", "b_x", "c_x"], 20)
    for lab in ("a_x", "b_x", "c_x"):  # equal category means
        noise[labels == lab] -= noise[labels == lab].mean(0)
    d = signal_diagnostics(signals, {"valence": noise + v, "arousal": noise + v}, labels)
    assert d["valence_mean_cosine_distance"] == pytest.approx(0, abs=1e-12)
    assert d["valence_separation_ratio"] == pytest.approx(0, abs=1e-12)


def test_separated_categories_score_high():
    rng = np.random.default_rng(0)
    centres = {c: rng.normal(size=128) * 5 for c in ("a_x", "b_x", "c_x")}
    labels = np.repeat(list(centres), 30)
    acts = np.stack([centres[lab] + rng.normal(size=128) for lab in labels])
    d = signal_diagnostics(_set(centres), {"valence": acts, "arousal": acts}, labels)
    assert d["valence_separation_ratio"] > 10
    assert d["valence_nearest_centroid_accuracy"] == 1.0
    assert d["nearest_centroid_chance"] == pytest.approx(1 / 3)
    assert d["valence_mean_cosine_distance"] > 0.5
    # Same distribution for every category: F near 1, accuracy near chance.
    mixed = rng.normal(size=(300, 128))
    labels = np.repeat(list(centres), 100)
    d = signal_diagnostics(_set(centres), {"valence": mixed}, labels)
    assert 0.5 < d["valence_separation_ratio"] < 2
    assert "arousal_separation_ratio" not in d


def test_single_category_diagnostics_are_nan_not_errors():
    d = signal_diagnostics(_set({"a_x": np.ones(128)}))
    assert math.isnan(d["valence_mean_cosine_distance"])


# --------------------------------------------------------------------------- cache
def test_cached_signals_build_once_per_key(tmp_path, bin9, bin25):
    calls = []
    vectors = {"neutral_moderate": {"valence": np.ones(128), "arousal": np.zeros(128)}}
    train, other = np.arange(0, 30), np.arange(0, 40)

    def build(name="9bin"):
        calls.append(name)
        return SignalSet(name, {k: dict(v) for k, v in vectors.items()}, {"neutral_moderate": 20}, {"split": "train"})

    first = cached_signals("m1", "d1", train, bin9, tmp_path, build)
    second = cached_signals("m1", "d1", train[::-1].copy(), bin9, tmp_path, build)  # same set, any order
    assert len(calls) == 1 and second.fingerprint() == first.fingerprint()
    assert second.source_path == first.source_path and second.source_path.parent == tmp_path
    cached_signals("m1", "d1", other, bin9, tmp_path, build)  # other indices: another key
    cached_signals("m2", "d1", train, bin9, tmp_path, build)  # another checkpoint
    assert len(calls) == 3
    first.source_path.write_text("{broken")  # a corrupt cache entry is rebuilt, not trusted
    cached_signals("m1", "d1", train, bin9, tmp_path, build)
    assert len(calls) == 4
    cached_signals("m1", "d1", train, bin9, None, build)  # caching off
    cached_signals("m1", "d1", train, bin9, None, build)
    assert len(calls) == 6


def test_cache_key_is_the_exact_indices_not_the_split_name(bin9):
    from steering.data import split_indices

    key = cache_key("m", "d", split_indices(1000, "train", "threeway", 0.7), bin9)
    assert cache_key("m", "d", split_indices(1000, "train", "threeway", 0.6), bin9) != key
    assert cache_key("m", "d", split_indices(1000, "train", "legacy", 0.7), bin9) == key  # the same clips


def test_grand_mean_is_unweighted_with_a_warning_when_counts_are_missing(caplog):
    vecs = {
        "a_x": {"valence": np.full(128, 1.0), "arousal": np.zeros(128)},
        "b_y": {"valence": np.full(128, 3.0), "arousal": np.zeros(128)},
    }
    weighted = SignalSet("9bin", vecs, {"a_x": 3, "b_y": 1})
    np.testing.assert_allclose(weighted.grand_mean("valence"), 1.5)
    with caplog.at_level("WARNING"):
        missing = SignalSet("9bin", vecs, {"a_x": 0, "b_y": 0}).grand_mean("valence")
    np.testing.assert_allclose(missing, 2.0)
    assert "unweighted" in caplog.text and "a_x" in caplog.text


# --------------------------------------------------------------------------- app
def test_signals_app_writes_file_with_provenance(tmp_path, ref_checkpoint, feature_file, bin9):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from steering.assets.extraction import extract_to_file
    from steering.data import file_hash

    out = tmp_path / "sig.json"
    overrides = [
        f"model.checkpoint={ref_checkpoint}",
        f"data.path={feature_file}",
        f"output={out}",
        "min_samples=2",
        "device=cpu",
        f"demo.cache_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="signals", overrides=overrides)
    assert cfg.split == "train"
    extract_to_file(OmegaConf.to_object(cfg))
    signals = load_signals(out, bin9)
    assert signals.metadata["checkpoint_hash"] == file_hash(ref_checkpoint)
    assert signals.metadata["split"] == "train" and signals.metadata["leakage"] is False
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="signals", overrides=[*overrides, "split=all", "binning=25bin"])
    assert cfg.output == str(out)
    extract_to_file(OmegaConf.to_object(cfg))
    assert load_signals(out, Binning.load(CONF / "binning" / "25bin.yaml")).metadata["leakage"] is True
