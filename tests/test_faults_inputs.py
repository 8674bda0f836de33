"""Fault matrix, hostile and foreign input files: each is refused in one line naming the file and the problem.

Feature files that declare more than they hold (HDF5 bombs), point at other files (external links,
virtual datasets, external raw storage) or hold corrupt chunks; JSON and YAML nested or tagged to
break their readers; a ``min_samples`` no category reaches; checkpoints that are no PyTorch file;
signals of another checkpoint; a tampered activation cache. Each refusal: a known error (exit 2 in
the apps), one line, no MLflow run, no output or cache written, no input changed, in bounded time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from steering.cli import error_line
from steering.data import FeatureFile
from steering.tracking.job import evaluate

ROOT = Path(__file__).resolve().parents[1]
#: Generous for CI; each case takes well under a second of its own here.
LIMIT_S = 60
#: Text of PyTorch's own advice that a one-line message must not carry.
TORCH_ADVICE = ("weights_only", "add_safe_globals", "PyTorch 2.6", "file an issue")


@pytest.fixture(scope="module")
def inputs(fault_inputs):
    return fault_inputs


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cfg(inputs, tmp: Path, *overrides: str):
    return inputs["config"](tmp, "batch_size=16", *overrides)


def _refused(inputs, tmp: Path, overrides: list[str], expected: str, hostile: Path | None = None) -> str:
    """Run the job on ``overrides``; assert a known one-line error containing ``expected`` and no trace left."""
    watched = [inputs["checkpoint"], inputs["features"], *([hostile] if hostile else [])]
    before = {p: _digest(p) for p in watched}
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        evaluate(_cfg(inputs, tmp, *overrides), results_dir=tmp / "out")
    seconds = time.monotonic() - started
    line = error_line(info.value)
    assert line is not None, f"{type(info.value).__name__} is not a known error: {info.value}"
    assert "\n" not in line and line.startswith("error: ")
    assert expected in line, line
    assert seconds < LIMIT_S, f"refused only after {seconds:.0f} s"
    db = tmp / "mlflow.db"
    if db.exists():
        assert mlflow.MlflowClient(f"sqlite:///{db}").search_runs(["0", "1"]) == []
    assert not (tmp / "out").exists() and not (tmp / "cache").exists()
    assert {p: _digest(p) for p in watched} == before
    return line


def _declaring(path: Path, n: int, frames: int, mel: int = 64, chunks=None, ratings: int | None = None) -> Path:
    """A gzip HDF5 file that declares (n, frames, mel) features and writes none of them (a few KB)."""
    rows = ratings or n
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "feature",
            shape=(n, frames, mel),
            dtype="f4",
            chunks=chunks or (1, min(frames, 1000), mel),
            compression="gzip",
        )
        for key in ("valence", "arousal"):
            h5.create_dataset(key, shape=(rows,), dtype="f4", chunks=(min(rows, 1 << 16),), compression="gzip")
        h5.create_dataset("audio_name", shape=(rows,), dtype="S16", chunks=(min(rows, 1 << 16),), compression="gzip")
    return path


def _small_rest(h5: h5py.File, n: int) -> None:
    """Ratings and names of ``n`` clips, written in place."""
    rng = np.random.default_rng(0)
    h5["valence"] = rng.uniform(-1, 1, n).astype("f4")
    h5["arousal"] = rng.uniform(-1, 1, n).astype("f4")
    h5["audio_name"] = np.array([f"c{i}".encode() for i in range(n)])


# --------------------------------------------------------------------------- declared shapes (HDF5 bombs)
BOMBS = {
    # name: (n, frames, chunks, what the line says)
    "frames_1e7": (300, 10**7, None, "declares 10000000 frames per clip; at most 65536"),
    "clips_2e9": (2 * 10**9, 32, None, "declares 2000000000 clips"),
    "frames_200000": (120, 200_000, None, "declares 200000 frames per clip"),
    "never_written": (20_000, 1000, None, "'feature' declares 4.77 GiB but stores 0 B"),
    "huge_chunks": (5000, 1000, (5000, 1000, 64), "stored in HDF5 chunks of (5000, 1000, 64)"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_declared_shapes_are_bounded_before_any_data_is_read(inputs, tmp_path, case):
    n, frames, chunks, expected = BOMBS[case]
    bomb = _declaring(tmp_path / f"{case}.h5", n, frames, chunks=chunks)
    assert bomb.stat().st_size < 64 << 10  # the whole file is a few KB
    line = _refused(inputs, tmp_path, [f"data.path={bomb}"], expected, hostile=bomb)
    assert line.startswith(f"error: {bomb}: ")


def test_a_rating_chunk_larger_than_its_dataset_is_refused(inputs, tmp_path):
    """120 ratings in a resizable dataset whose one chunk would decompress to 1 GiB (declared, not written)."""
    bomb = tmp_path / "chunk_bomb.h5"
    with h5py.File(inputs["features"], "r") as src, h5py.File(bomb, "w") as dst:
        for key in ("feature", "arousal", "audio_name"):
            dst[key] = src[key][:]
        dst.create_dataset("valence", shape=(120,), dtype="f4", chunks=(1 << 28,), maxshape=(None,), compression="gzip")
    _refused(inputs, tmp_path, [f"data.path={bomb}"], "'valence' is stored in HDF5 chunks", bomb)


def test_a_batch_of_long_clips_that_cannot_fit_is_refused_before_any_forward(inputs, tmp_path, reference_state):
    from steering.assets.validation import device_memory

    wide = tmp_path / "wide.pth"  # 64 channels in the first block, as in the reference Cnn6
    torch.save({"model": reference_state(channels=(64, 8, 8, 16))}, wide)
    n, frames, batch = 70, 1 << 16, 70
    need = 2 * batch * 64 * frames * 64 * 4
    if (device_memory("cpu") or need) >= need:
        pytest.skip(f"this machine has the {need >> 30} GiB a batch of {batch} clips of {frames} frames needs")
    long_clips = tmp_path / "long.h5"
    with h5py.File(long_clips, "w") as h5:
        h5.create_dataset("feature", shape=(n, frames, 64), dtype="f4", chunks=(1, frames, 64), compression="gzip")
        h5["feature"][0] = np.random.default_rng(0).normal(-40, 10, (frames, 64))  # stored: no bomb
        _small_rest(h5, n)
    line = _refused(
        inputs,
        tmp_path,
        [f"model.checkpoint={wide}", f"data.path={long_clips}", f"batch_size={batch}"],
        f"batch_size: {batch}: a batch of {batch} clips of {frames} frames from {long_clips} needs about",
        hostile=long_clips,
    )
    assert "use batch_size=" in line


def test_a_compressed_feature_file_reads_as_the_plain_one(inputs, tmp_path):
    """The bounds leave real files alone: a gzip copy chunked by clip reads the same values."""
    packed = tmp_path / "packed.h5"
    with h5py.File(inputs["features"], "r") as src, h5py.File(packed, "w") as dst:
        for key in src:
            data = src[key][:]
            options = {"chunks": (1, *data.shape[1:]), "compression": "gzip"} if key == "feature" else {}
            dst.create_dataset(key, data=data, **options)
    idx = np.arange(0, 120, 7)
    with FeatureFile(inputs["features"]) as plain, FeatureFile(packed) as gz:
        assert np.array_equal(plain.read(idx).features.numpy(), gz.read(idx).features.numpy())
        assert plain.audio_names == gz.audio_names


# --------------------------------------------------------------------------- data outside the file
def _external_link(tmp: Path, target: str) -> Path:
    path = tmp / "link.h5"
    with h5py.File(path, "w") as h5:
        h5["feature"] = h5py.ExternalLink(target, "/feature")
        _small_rest(h5, 120)
    return path


def _virtual(tmp: Path, features: Path) -> Path:
    path = tmp / "virtual.h5"
    layout = h5py.VirtualLayout(shape=(120, 32, 64), dtype="f4")
    layout[:] = h5py.VirtualSource(str(features), "feature", shape=(120, 32, 64))
    with h5py.File(path, "w") as h5:
        h5.create_virtual_dataset("feature", layout)
        _small_rest(h5, 120)
    return path


def _external_raw(tmp: Path) -> Path:
    raw = tmp / "raw.bin"
    raw.write_bytes(np.zeros((120, 32, 64), "f4").tobytes())
    path = tmp / "external_raw.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("feature", shape=(120, 32, 64), dtype="f4", external=[(str(raw), 0, raw.stat().st_size)])
        _small_rest(h5, 120)
    return path


def _group(tmp: Path) -> Path:
    path = tmp / "group.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("feature")
        _small_rest(h5, 120)
    return path


def _corrupt_chunk(tmp: Path, features: Path) -> Path:
    """A gzip copy whose 7th chunk's compressed bytes are overwritten: HDF5 fails to inflate it."""
    path = tmp / "corrupt.h5"
    with h5py.File(features, "r") as src, h5py.File(path, "w") as dst:
        dst.create_dataset("feature", data=src["feature"][:], chunks=(1, 32, 64), compression="gzip")
        for key in ("valence", "arousal", "audio_name"):
            dst[key] = src[key][:]
        info = dst["feature"].id.get_chunk_info(6)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    return path


LINKED = {
    "external_link_missing": (lambda tmp, f: _external_link(tmp, "missing.h5"), "is an external link to missing.h5"),
    "external_link": (lambda tmp, f: _external_link(tmp, str(f)), "links to other files are not followed"),
    "virtual_dataset": (_virtual, "'feature' is a virtual dataset"),
    "external_raw_storage": (lambda tmp, f: _external_raw(tmp), "keeps its data in external raw file(s)"),
    "group_not_dataset": (lambda tmp, f: _group(tmp), "'feature' must be a dataset, got a group"),
    "corrupt_chunk": (_corrupt_chunk, "cannot read 'feature'"),
}


@pytest.mark.parametrize("case", sorted(LINKED))
def test_features_outside_the_file_or_unreadable_are_one_line(inputs, tmp_path, case):
    make, expected = LINKED[case]
    hostile = make(tmp_path, inputs["features"])
    line = _refused(inputs, tmp_path, [f"data.path={hostile}"], expected, hostile=hostile)
    assert line.startswith(f"error: {hostile}: ") or str(hostile.resolve()) in line


# --------------------------------------------------------------------------- JSON and YAML readers
def test_signal_json_nested_200000_deep_is_one_line(inputs, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"metadata": ' + "[" * 200_000 + "]" * 200_000 + "}")
    line = _refused(inputs, tmp_path, [f"signals.path={deep}"], "nested too deeply", hostile=deep)
    assert line.startswith(f"error: {deep}: ")
    # Nesting the reader survives but later code would recurse through is refused as well.
    merely_deep = tmp_path / "deep100.json"
    merely_deep.write_text('{"metadata": {"a": ' + "[" * 100 + "]" * 100 + "}}")
    _refused(inputs, tmp_path, [f"signals.path={merely_deep}"], "nested more than 64 levels")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"indices": ["x", 1]}, "metadata.indices must be a list of clip indices"),
        ({"indices": [1e30]}, "metadata.indices must be a list of clip indices"),
        ({"diagnostics": [1, 2]}, "metadata.diagnostics must be a JSON dict"),
        ({"checkpoint_hash": 7}, "metadata.checkpoint_hash must be a JSON str"),
    ],
)
def test_signal_provenance_of_the_wrong_type_is_one_line(inputs, tmp_path, metadata, expected):
    path = tmp_path / "signals.json"
    entry = {"valence_128d": [0.1] * 128, "arousal_128d": [0.1] * 128, "samples_count": 5}
    path.write_text(json.dumps({"positive_moderate": entry, "metadata": metadata}))
    line = _refused(inputs, tmp_path, [f"signals.path={path}"], expected, hostile=path)
    assert line.startswith(f"error: {path}: ")


def test_python_tag_in_a_binning_yaml_is_one_line_and_never_runs(tmp_path):
    from steering.data.binning import Binning

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        f'name: evil\nmin_samples: !!python/object/apply:os.system ["touch {marker}"]\n'
        "valence: {thresholds: [-0.3, 0.3], names: [negative, neutral, positive]}\n"
        "arousal: {thresholds: [-0.3, 0.3], names: [weak, moderate, strong]}\n"
    )
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    for path, expected in ((evil, "python/object/apply:os.system"), (deep, "nested too deeply")):
        with pytest.raises(Exception) as info:
            Binning.load(path)
        line = error_line(info.value)
        assert line is not None and "\n" not in line, info.value
        assert line.startswith(f"error: {path}: ") and expected in line
    assert not marker.exists()


# --------------------------------------------------------------------------- min_samples before extraction
def test_min_samples_no_category_reaches_is_refused_before_extraction(inputs, tmp_path, monkeypatch):
    from steering.signals import extract

    def never(*_a, **_k):
        raise AssertionError("signals were extracted before min_samples was checked")

    monkeypatch.setattr(extract, "pass1_activations", never)
    line = _refused(inputs, tmp_path, ["binning.min_samples=1000"], "binning.min_samples: 1000: 0 categories")
    assert str(inputs["features"]) in line
    _refused(
        inputs,
        tmp_path,
        ["category=shuffled", "binning.min_samples=30"],
        "the shuffled control needs signals for 2",
    )


def test_a_fixed_target_below_min_samples_is_refused_before_extraction(inputs, tmp_path):
    from steering.data import split_indices
    from steering.data.binning import Binning

    binning = Binning.from_conf(_cfg(inputs, tmp_path).binning)
    with FeatureFile(inputs["features"]) as ff:
        train = split_indices(len(ff), "train")
        names, counts = np.unique(binning.categorize(ff.valence[train], ff.arousal[train]), return_counts=True)
    rare, most = names[np.argmin(counts)], int(counts.max())
    assert counts.min() < most  # the fixture has a category smaller than the largest one
    _refused(
        inputs,
        tmp_path,
        ["category=fixed", f"category.target={rare}", f"binning.min_samples={most}"],
        f"category.target: '{rare}' has {counts.min()} of the",
    )


def test_signals_app_checks_min_samples_before_extraction(compose_config, inputs, tmp_path):
    from steering.assets.extraction import extract_to_file

    cfg = OmegaConf.to_object(
        compose_config(
            f"model.checkpoint={inputs['checkpoint']}",
            f"data.path={inputs['features']}",
            f"output={tmp_path}/signals.json",
            f"demo.cache_dir={tmp_path}/demo",
            "min_samples=500",
            app="signals",
        )
    )
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        extract_to_file(cfg)
    line = error_line(info.value)
    assert line is not None and line.startswith("error: min_samples: 500: 0 categories"), info.value
    assert time.monotonic() - started < LIMIT_S
    assert not (tmp_path / "signals.json").exists()


# --------------------------------------------------------------------------- signals of another checkpoint
def test_signals_of_another_checkpoint_are_warned_about_and_tagged(inputs, tmp_path, reference_state, caplog):
    first = evaluate(_cfg(inputs, tmp_path), results_dir=tmp_path / "a")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(first.run_id).data.tags["signals_other_checkpoint"] == "false"
    signals = tmp_path / "a" / "signals_9bin.json"
    other = tmp_path / "other.pth"
    torch.save({"model": reference_state(seed=1)}, other)
    caplog.clear()
    second = evaluate(
        _cfg(inputs, tmp_path, f"model.checkpoint={other}", f"signals.path={signals}"),
        results_dir=tmp_path / "b",
    )
    tags = client.get_run(second.run_id).data.tags
    assert tags["signals_other_checkpoint"] == "true" and tags["signals_other_data"] == "false"
    assert "extracted with another checkpoint" in caplog.text
    # The same file with the checkpoint it came from: no warning, no tag.
    caplog.clear()
    third = evaluate(_cfg(inputs, tmp_path, f"signals.path={signals}"), results_dir=tmp_path / "c")
    assert client.get_run(third.run_id).data.tags["signals_other_checkpoint"] == "false"
    assert "another checkpoint" not in caplog.text


# --------------------------------------------------------------------------- checkpoints that are no PyTorch file
def _load_line(path: Path, trust: bool = False) -> str:
    from steering.model import load_model

    with pytest.raises(Exception) as info:
        load_model(path, trust_pickle=trust)
    line = error_line(info.value)
    assert line is not None, f"{type(info.value).__name__} is not a known error: {info.value}"
    assert "\n" not in line and line.startswith(f"error: {path}: ")
    assert not any(advice in line for advice in TORCH_ADVICE), line
    return line


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_not_a_readable_pytorch_file(tmp_path, seed):
    path = tmp_path / f"garbage{seed}.pth"
    path.write_bytes(np.random.default_rng(seed).bytes(2048))
    for trust in (False, True):
        line = _load_line(path, trust)
        assert "not a readable PyTorch file" in line and "trust_pickle" not in line


def test_legacy_saves_and_plain_pickles_name_the_blocked_type(tmp_path, reference_state, writes_a_file):
    marker = tmp_path / "PWNED"
    state = {"model": reference_state(), "ratio": Fraction(1, 3)}
    for protocol in (2, 4):
        legacy = tmp_path / f"legacy{protocol}.pth"
        torch.save(state, legacy, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
        assert "refusing to unpickle fractions.Fraction" in _load_line(legacy)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"model": {}, "payload": writes_a_file(marker)}))
    for trust in (False, True):  # torch cannot load a plain pickle: trusting it would only run its code
        line = _load_line(plain, trust)
        assert "a plain pickle, not a PyTorch file; refusing to unpickle io.open" in line
    empty_pickle = tmp_path / "dict.pkl"
    empty_pickle.write_bytes(pickle.dumps({"a": 1}))
    assert "a plain pickle, not a PyTorch file" in _load_line(empty_pickle)
    torn = tmp_path / "torn.pth"
    torch.save({"model": reference_state()}, torn, _use_new_zipfile_serialization=False)
    torn.write_bytes(torn.read_bytes()[:200])
    assert "not a readable PyTorch file" in _load_line(torn)
    assert not marker.exists()


# --------------------------------------------------------------------------- the random control's cache
def test_tampered_pass1_activation_cache_is_detected_and_recomputed(inputs, tmp_path, caplog):
    overrides = ("method=bypass", "strength=2", "category=random", "category.draws=2")
    first = evaluate(_cfg(inputs, tmp_path, *overrides), results_dir=tmp_path / "a")
    (cached,) = (tmp_path / "cache" / "activations").glob("pass1_*.npz")
    with np.load(cached) as stored:
        original = {k: stored[k] for k in stored.files}
    np.savez(cached, **{k: np.full_like(v, 7.0) for k, v in original.items()})  # a valid file with other values
    caplog.clear()
    second = evaluate(_cfg(inputs, tmp_path, *overrides), results_dir=tmp_path / "b")
    assert "does not match its checksum" in caplog.text
    assert second.metrics["dr_valence"] == pytest.approx(first.metrics["dr_valence"])
    assert second.metrics["dr_arousal"] == pytest.approx(first.metrics["dr_arousal"])
    with np.load(cached) as stored:  # rebuilt from the model, not the tampered values
        assert all(np.array_equal(stored[k], v) for k, v in original.items())


# --------------------------------------------------------------------------- one real process
def test_cli_refuses_a_feature_bomb_in_one_line_fast(inputs, tmp_path):
    bomb = _declaring(tmp_path / "bomb.h5", 120, 200_000)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "steering.run",
            f"model.checkpoint={inputs['checkpoint']}",
            f"data.path={bomb}",
            f"tracking.uri=sqlite:///{tmp_path}/m.db",
            f"cache.dir={tmp_path}/cache",
            f"hydra.run.dir={tmp_path}/out",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert time.monotonic() - started < 2 * LIMIT_S  # the interpreter's start included
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert lines == [f"error: {bomb}: 'feature' declares 200000 frames per clip; at most 65536 are read"]
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "cache").exists()
