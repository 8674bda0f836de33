"""Fault matrix: bad inputs and options stop before any work, in one line naming the file or option.

Most cases go through the runner in-process (the same checks the apps run); a few real processes
prove the exit status 2 and the one line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
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

from steering.cli import error_line
from steering.data import write_feature_file
from steering.errors import ResultError
from steering.tracking.job import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(fault_inputs):
    return fault_inputs


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cfg(inputs, tmp: Path, *overrides: str):
    return inputs["config"](tmp, *overrides)


@pytest.fixture(scope="module")
def write_features(make_feature_arrays):
    """``write_features(tmp, name, edit=None, **arrays)``: a feature file like the inputs', edited in place."""

    def write(tmp: Path, name: str, edit=None, **kwargs) -> Path:
        feats, valence, arousal, names = make_feature_arrays(**{"n": 120, "frames": 32, "seed": 5, **kwargs})
        if edit:
            edit(feats, valence, arousal)
        return write_feature_file(tmp / name, feats, valence, arousal, names)

    return write


def _signals(tmp: Path, name: str, vectors: dict) -> Path:
    path = tmp / name
    path.write_text(json.dumps(vectors))
    return path


def _vec(n=128, value=0.1):
    return [value] * n


def _case_files(tmp: Path, write_features, reference_state, writes_a_file) -> dict[str, tuple[list[str], str]]:
    """Override lists that point at bad files, with the text the message must contain."""
    nan_feat = write_features(tmp, "nan_feat.h5", lambda f, v, a: f.__setitem__(np.s_[:, 3, 5], np.nan))
    nan_rating = write_features(tmp, "nan_rating.h5", lambda f, v, a: a.__setitem__(4, np.inf))
    narrow = write_features(tmp, "narrow.h5", mel=32)
    short = write_features(tmp, "short.h5", frames=8)
    few = write_features(tmp, "few.h5", n=30)
    no_keys = tmp / "no_keys.h5"
    with h5py.File(no_keys, "w") as h5:
        h5["feature"] = np.zeros((4, 32, 64), np.float32)
    evil = tmp / "evil.pth"
    torch.save({"model": reference_state(), "payload": writes_a_file(tmp / "PWNED")}, evil)
    garbage = tmp / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(2048))  # fixed bytes: one reproducible failure
    partial = tmp / "partial.pth"
    state = reference_state()
    state.pop("affective_valence.0.weight")
    torch.save(state, partial)
    wrong_len = _signals(
        tmp, "short_signal.json", {"positive_moderate": {"valence_128d": _vec(64), "arousal_128d": _vec()}}
    )
    unknown = _signals(tmp, "unknown.json", {"ecstatic": {"valence_128d": _vec(), "arousal_128d": _vec()}})
    corrupt_db = tmp / "corrupt.db"
    corrupt_db.write_bytes(b"this is no sqlite file" * 100)
    return {
        "nan_features": ([f"data.path={nan_feat}"], f"{nan_feat}: 'feature' has NaN/inf"),
        "nan_ratings": ([f"data.path={nan_rating}"], f"{nan_rating}: 'arousal' has 1 NaN/inf"),
        "mel_width": ([f"data.path={narrow}"], f"{narrow}: features have 32 mel bins, the model expects 64"),
        "too_few_frames": ([f"data.path={short}"], f"{short}: clips have 8 frames"),
        "too_few_clips": ([f"data.path={few}"], "data.eval_split: 'test' holds"),
        "missing_keys": ([f"data.path={no_keys}"], f"{no_keys}: missing key(s)"),
        "missing_features": ([f"data.path={tmp}/nope.h5"], f"data.path: {tmp}/nope.h5 does not exist"),
        "crafted_checkpoint": ([f"model.checkpoint={evil}"], f"{evil}: refusing to unpickle io.open"),
        "garbage_checkpoint": (
            [f"model.checkpoint={garbage}"],
            rf"{re.escape(str(garbage))}: not a readable PyTorch file",
        ),
        "partial_checkpoint": ([f"model.checkpoint={partial}"], f"{partial}: missing key 'affective_valence.0.weight'"),
        "missing_checkpoint": ([f"model.checkpoint={tmp}/none.pth"], "model.checkpoint:"),
        "signal_length": ([f"signals.path={wrong_len}"], f"{wrong_len}: positive_moderate.valence_128d must hold 128"),
        "signal_category": ([f"signals.path={unknown}"], f"{unknown}: unknown category 'ecstatic'"),
        "corrupt_store": (
            [f"tracking.uri=sqlite:///{corrupt_db}"],
            f"sqlite:///{corrupt_db}: {corrupt_db} is not a usable",
        ),
        "unreachable_server": (
            ["tracking.uri=http://127.0.0.1:9"],
            "http://127.0.0.1:9: tracking server not reachable",
        ),
    }


#: Each option's message names it; the typed config (Hydra) or the validation layer may be the one refusing.
OPTION_CASES = {
    "strength_text": (["strength=abc"], r"strength.*(must be a number|could not be converted)"),
    "strength_inf": (["strength=inf"], r"strength.*finite"),
    "alpha_nan": (["alpha=nan"], r"alpha.*finite"),
    "batch_size_zero": (["batch_size=0"], r"batch_size.*must be >= 1"),
    "batch_size_fraction": (["batch_size=2.5"], r"batch_size.*(integer|Integer)"),
    "forward_passes": (["forward_passes=1"], r"forward_passes.*must be >= 2"),
    "precision": (["precision=fp64"], r"precision.*auto, fp32, bf16, fp16"),
    "bootstrap_too_few": (["metrics.bootstrap_resamples=20"], r"metrics\.bootstrap_resamples: 20 is too few"),
    "confidence": (["metrics.confidence=1.5"], r"metrics\.confidence.*1\.5"),
    "eval_split": (["data.eval_split=holdout"], r"data\.eval_split.*train, val, test, all"),
    "legacy_test": (["data.split=legacy"], r"data\.eval_split: the 'legacy' split has no test part"),
    "fixed_target": (["category=fixed", "category.target=ecstatic"], r"category\.target.*ecstatic"),
    "impossible_pair": (["pathway=arousal", "layer=conv4"], r"the model has no connection arousal->conv4"),
    "bad_binning": (["binning.valence.thresholds=[0.5,0.1]"], r"binning '9bin': valence thresholds must be strictly"),
}
if not torch.cuda.is_available():
    OPTION_CASES["device_cuda"] = (["device=cuda"], r"device: 'cuda' asked for, but CUDA is not available")


@pytest.fixture(scope="module")
def file_cases(inputs, write_features, reference_state, writes_a_file):
    return _case_files(inputs["tmp"], write_features, reference_state, writes_a_file)


def _assert_refused(inputs, tmp: Path, overrides: list[str], expected: str) -> None:
    watched = [inputs["checkpoint"], inputs["features"]]
    before = {p: _digest(p) for p in watched}
    with pytest.raises(Exception) as info:
        evaluate(_cfg(inputs, tmp, *overrides), results_dir=tmp / "out")
    line = error_line(info.value)
    assert line is not None, f"{type(info.value).__name__} is not a known error: {info.value}"
    assert "\n" not in line and line.startswith("error: ")
    assert expected in line or re.search(expected, line), line
    # Nothing was logged and nothing computed or changed.
    db = tmp / "mlflow.db"
    if db.exists():
        assert mlflow.MlflowClient(f"sqlite:///{db}").search_runs(["0", "1"]) == []
    assert not (tmp / "out").exists() and not (tmp / "cache").exists()
    assert {p: _digest(p) for p in watched} == before


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_bad_option_is_refused_before_any_work(inputs, tmp_path, case):
    overrides, expected = OPTION_CASES[case]
    _assert_refused(inputs, tmp_path, overrides, expected)


FILE_CASES = [
    "nan_features",
    "nan_ratings",
    "mel_width",
    "too_few_frames",
    "too_few_clips",
    "missing_keys",
    "missing_features",
    "crafted_checkpoint",
    "garbage_checkpoint",
    "partial_checkpoint",
    "missing_checkpoint",
    "signal_length",
    "signal_category",
    "corrupt_store",
    "unreachable_server",
]


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_file_is_refused_before_any_work(inputs, file_cases, tmp_path, case):
    overrides, expected = file_cases[case]
    started = time.monotonic()
    _assert_refused(inputs, tmp_path, overrides, expected)
    assert time.monotonic() - started < 10
    assert not (inputs["tmp"] / "PWNED").exists()


def test_numpy_values_of_old_checkpoints_load_and_other_objects_only_when_trusted(
    inputs, tmp_path, caplog, reference_state
):
    from steering.model import CheckpointError, load_model

    load_model(inputs["checkpoint"])  # numpy.float64 / int64 entries load with weights_only
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": reference_state(), "best": np.float32(1.0)}, legacy, _use_new_zipfile_serialization=False)
    load_model(legacy)
    odd = tmp_path / "odd.pth"
    torch.save({"model": reference_state(), "ratio": Fraction(1, 3)}, odd)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle fractions.Fraction.*model.trust_pickle=true"):
        load_model(odd)
    load_model(odd, trust_pickle=True)
    assert "model.trust_pickle=true: fully unpickling" in caplog.text


def test_non_finite_predictions_fail_the_run_with_results_on_disk(inputs, tmp_path):
    with pytest.raises(ResultError, match="non-finite predictions in steered_valence"):
        evaluate(_cfg(inputs, tmp_path, "method=bypass", "strength=1e38"), results_dir=tmp_path / "out")
    db = tmp_path / "mlflow.db"  # the run opens only to record finished results: no stray FAILED run
    assert not db.exists() or mlflow.MlflowClient(f"sqlite:///{db}").search_runs(["0", "1"]) == []
    assert "steered_valence" in (tmp_path / "out" / "predictions.csv").read_text().splitlines()[0]


def test_results_reach_disk_first_and_resume_logs_them_without_recomputing(inputs, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from steering.errors import TrackingError
    from steering.tracking import job as runner

    def server_gone(*_a, **_k):
        raise MlflowException("API request failed: connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(runner.mlflow, "log_metrics", server_gone)
        with pytest.raises(TrackingError, match=f"logging failed .* the results are in {tmp_path}/out"):
            evaluate(_cfg(inputs, tmp_path, "resume=true"), results_dir=tmp_path / "out")
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"predictions.csv", "per_category.csv", "config.yaml", "signals_9bin.json"} <= {
        p.name for p in out.iterdir()
    }
    assert list((tmp_path / "cache" / "pending").glob("*.json"))

    def recompute(*_a, **_k):
        raise AssertionError("resume recomputed a configuration whose results were on disk")

    monkeypatch.setattr(runner, "evaluate_configuration", recompute)
    result = evaluate(_cfg(inputs, tmp_path, "resume=true"), results_dir=tmp_path / "again")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["dr_valence"] == pytest.approx(metrics["dr_valence"])
    assert "predictions.csv" in {a.path for a in client.list_artifacts(result.run_id)}
    assert not list((tmp_path / "cache" / "pending").glob("*.json"))


def test_signals_from_another_feature_file_are_not_called_leakage(inputs, tmp_path, write_features):
    first = evaluate(_cfg(inputs, tmp_path, "signals.split=all"), results_dir=tmp_path / "a")
    assert first.tags["signals_leakage"] == "true"
    signals = tmp_path / "a" / "signals_9bin.json"
    other = write_features(tmp_path, "other.h5", seed=9)
    second = evaluate(
        _cfg(inputs, tmp_path, f"signals.path={signals}", f"data.path={other}"), results_dir=tmp_path / "b"
    )
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(second.run_id)
    assert run.data.tags["signals_leakage"] == "false"
    assert run.data.tags["signals_other_data"] == "true"


def _create_store(uri: str, barrier) -> None:
    from steering.tracking.runs import configure

    barrier.wait()
    configure(uri, "steering")


def test_two_processes_creating_a_fresh_sqlite_store_both_succeed(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path}/fresh{attempt}.db"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_create_store, args=(uri, barrier)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]


def test_write_feature_file_leaves_no_tmp_on_interrupt(tmp_path, monkeypatch, make_feature_arrays):
    from steering.data import features

    real = features.h5py.File

    class Interrupting:
        def __init__(self, *args, **kwargs):
            self.h5 = real(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.h5.close()

        def create_dataset(self, name, **kwargs):
            if name == "arousal":
                raise KeyboardInterrupt
            return self.h5.create_dataset(name, **kwargs)

    monkeypatch.setattr(features.h5py, "File", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        write_feature_file(tmp_path / "f.h5", *make_feature_arrays(n=4))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- real processes
def _app(module: str, *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_cli_crafted_checkpoint_runs_nothing_and_exits_2(inputs, file_cases, tmp_path):
    evil = file_cases["crafted_checkpoint"][0][0].split("=", 1)[1]
    proc = _app(
        "steering.run",
        f"model.checkpoint={evil}",
        f"data.path={inputs['features']}",
        f"tracking.uri=sqlite:///{tmp_path}/m.db",
        f"hydra.run.dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert "refusing to unpickle io.open" in _one_error_line(proc)
    assert not (inputs["tmp"] / "PWNED").exists()
    assert not (tmp_path / "m.db").exists()


def test_cli_option_error_is_one_line_and_full_traceback_on_request(tmp_path):
    proc = _app("steering.run", "strength=abc", f"hydra.run.dir={tmp_path}/out", cwd=tmp_path)
    line = _one_error_line(proc)
    assert "strength" in line and "'abc'" in line
    assert proc.stderr.strip() == line  # nothing else on stderr
    env_full = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(ROOT)}
    full = subprocess.run(
        [sys.executable, "-m", "steering.run", "strength=abc", f"hydra.run.dir={tmp_path}/out"],
        capture_output=True,
        text=True,
        env=env_full,
        timeout=120,
        cwd=tmp_path,
    )
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_cli_unreachable_server_fails_fast(inputs, tmp_path):
    started = time.monotonic()
    proc = _app(
        "steering.run",
        f"model.checkpoint={inputs['checkpoint']}",
        f"data.path={inputs['features']}",
        "tracking.uri=http://127.0.0.1:9",
        f"hydra.run.dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert _one_error_line(proc).startswith("error: http://127.0.0.1:9: tracking server not reachable")
    assert time.monotonic() - started < 30  # interpreter start included; the check itself takes < 10 s


def test_cli_other_apps_refuse_in_one_line(inputs, tmp_path):
    out_dir = tmp_path / "a_directory"
    out_dir.mkdir()
    prepare = _app("steering.prepare", "source=synthetic", f"output={out_dir}", cwd=tmp_path)
    assert f"output: {out_dir} is a directory" in _one_error_line(prepare)
    signals = _app(
        "steering.signals",
        f"model.checkpoint={inputs['checkpoint']}",
        f"data.path={inputs['features']}",
        f"output={out_dir}",
        f"hydra.run.dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert f"output: {out_dir} is a directory" in _one_error_line(signals)
    train = _app(
        "steering.train",
        f"data.path={inputs['features']}",
        "train.lr=-1",
        f"tracking.uri=sqlite:///{tmp_path}/t.db",
        f"hydra.run.dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert re.search(r"train\.lr.*(must be > 0|-1)", _one_error_line(train))
    assert not (tmp_path / "t.db").exists()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_as_a_checkpoint_give_a_known_one_line_error(tmp_path, seed):
    """Whatever malformed bytes make the unpickler raise, the loader answers with a known error naming the file."""
    from steering.model.safe_load import safe_torch_load

    path = tmp_path / f"garbage{seed}.pth"
    path.write_bytes(np.random.default_rng(seed).bytes(2048))
    with pytest.raises(Exception) as info:
        safe_torch_load(path)
    line = error_line(info.value)
    assert line is not None, f"{type(info.value).__name__} is not a known error: {info.value}"
    assert str(path) in line and "\n" not in line
