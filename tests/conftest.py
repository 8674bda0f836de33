"""Shared fixtures: tiny models, reference-layout checkpoints and feature files made on the spot."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TINY_CHANNELS = (4, 8, 8, 16)
TINY_EMBEDDING = 16
TINY_HIDDEN = 12
SOURCE_DIM = 128
CONNECTIONS = [
    ("affective_valence_128d", "visual_system_base_conv_block4", 3),
    ("affective_valence_128d", "visual_system_base_conv_block3", 2),
    ("affective_arousal_128d", "visual_system_base_conv_block2", 1),
    ("affective_arousal_128d", "visual_system_base_conv_block1", 0),
]


def reference_state(
    channels=TINY_CHANNELS, embedding=TINY_EMBEDDING, hidden=TINY_HIDDEN, flat_lrm=False, seed=0
) -> dict[str, torch.Tensor]:
    """A state_dict written from the reference key list (reference-model.md §1.6), random values."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    b = "visual_system.base."
    s: dict[str, torch.Tensor] = {
        b + "spectrogram_extractor.stft.conv_real.weight": rnd(513, 1, 1024),
        b + "spectrogram_extractor.stft.conv_imag.weight": rnd(513, 1, 1024),
        b + "logmel_extractor.melW": rnd(513, 64),
    }
    for name, n in [("bn0", 64)] + [(f"conv_block{i + 1}.bn1", c) for i, c in enumerate(channels)]:
        s[b + name + ".weight"] = 1 + rnd(n, scale=0.1)
        s[b + name + ".bias"] = rnd(n, scale=0.1)
        s[b + name + ".running_mean"] = rnd(n, scale=0.1)
        s[b + name + ".running_var"] = 1 + rnd(n, scale=0.1).abs()
        s[b + name + ".num_batches_tracked"] = torch.tensor(7)
    widths = (1, *channels)
    for i in range(4):
        s[b + f"conv_block{i + 1}.conv1.weight"] = rnd(widths[i + 1], widths[i], 5, 5, scale=0.4)
    s[b + "fc1.weight"] = rnd(embedding, channels[-1])
    s[b + "fc1.bias"] = rnd(embedding, scale=0.1)
    s[b + "fc_audioset.weight"] = rnd(527, embedding)
    s[b + "fc_audioset.bias"] = rnd(527)
    for head in ("affective_valence", "affective_arousal"):
        for idx, shape in [(0, (hidden, embedding)), (2, (SOURCE_DIM, hidden)), (4, (1, SOURCE_DIM))]:
            s[f"{head}.{idx}.weight"] = rnd(*shape)
            s[f"{head}.{idx}.bias"] = rnd(shape[0], scale=0.1)
    for source, target, idx in CONNECTIONS:
        block = f"from_{source}_to_{target}"
        prefix = f"lrm.{block}." if flat_lrm else f"lrm.{target}_modulation.{block}."
        s[prefix + "neg_scale"] = 1 + rnd(1, scale=0.2)
        s[prefix + "pos_scale"] = 1 + rnd(1, scale=0.2)
        s[prefix + "rescale.resize.conv1x1.weight"] = rnd(SOURCE_DIM, SOURCE_DIM, 1, 1, scale=0.1)
        s[prefix + "modulation.weight"] = rnd(channels[idx], SOURCE_DIM, 1, 1, scale=0.1)
        s[prefix + "modulation.bias"] = rnd(channels[idx], scale=0.1)
    return s


@pytest.fixture
def ref_checkpoint(tmp_path):
    """Path of a tiny reference-layout checkpoint (nested LRM, with the usual extra keys)."""
    path = tmp_path / "ref.pth"
    torch.save({"model": reference_state(), "iteration": 10, "best_val_pearson": 0.5, "optimizer": {}}, path)
    return path


@pytest.fixture
def tiny_model(ref_checkpoint):
    from steering import load_model

    return load_model(ref_checkpoint)


def make_feature_arrays(n=40, frames=32, mel=64, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(-40, 10, size=(n, frames, mel)).astype(np.float32)
    valence = rng.uniform(-1, 1, n).astype(np.float32)
    arousal = rng.uniform(-1, 1, n).astype(np.float32)
    names = [f"clip_{i:04d}.wav" for i in range(n)]
    return feats, valence, arousal, names


def sweep_assets(tmp) -> dict:
    """A tiny reference checkpoint and a 120-clip feature file in ``tmp``, for subprocess sweeps."""
    from steering.data import write_feature_file

    checkpoint = tmp / "ref.pth"
    torch.save({"model": reference_state(), "iteration": 10}, checkpoint)
    features = write_feature_file(tmp / "feats.h5", *make_feature_arrays(n=120, frames=32, seed=5))
    return {"checkpoint": checkpoint, "features": features, "tmp": tmp}


@pytest.fixture
def feature_file(tmp_path):
    from steering.data import write_feature_file

    return write_feature_file(tmp_path / "features.h5", *make_feature_arrays())


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine: more torch threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Each test starts without the in-process caches of earlier tests (files differ per test)."""
    from steering.engine import store
    from steering.sweep.context import end_sweep

    store.clear_memory()
    end_sweep()
    yield
