"""Fault matrix, run lifecycle: no stray runs, the machine's errors in one line, options, stores and caches.

Each case: exit 2 (or the known error the apps print as one line), the line names the file or option,
no MLflow run is created, no existing file changes, and it ends in bounded time. Full disks and
read-only folders are real: a small tmpfs or a read-only bind mount (skipped, saying why, where the
machine does not allow mounting).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from steering.cli import error_line
from steering.errors import ConfigError, ResultError, TrackingError
from steering.tracking.job import evaluate

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 120  # generous: a tiny run takes ~15 s on a loaded 2-core machine


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _runs(db: Path) -> list:
    """Every run in a SQLite store ([] when the store was never created)."""
    if not db.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


def _line(exc: BaseException) -> str:
    line = error_line(exc)
    assert line is not None, f"{type(exc).__name__} is not a known error: {exc}"
    assert "\n" not in line and line.startswith("error: "), line
    return line


def _app(module: str, *args: str, cwd: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT), **(env or {})}
    if not env or "HYDRA_FULL_ERROR" not in env:
        environ.pop("HYDRA_FULL_ERROR", None)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=environ, timeout=300, cwd=cwd
    )
    return proc, time.monotonic() - started


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _run_args(assets, tmp: Path, *extra: str) -> list[str]:
    return [
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        f"cache.dir={tmp}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        "batch_size=16",
        *extra,
    ]


@contextlib.contextmanager
def _mount(*args: str, target: Path) -> Iterator[Path]:
    """``mount ARGS target`` for the block, always unmounted; skips when mounting is not allowed."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"no mount command here ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()[:200]}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, timeout=30)


def _full_tmpfs(target: Path):
    """A 64 KiB tmpfs, filled to the last byte."""

    @contextlib.contextmanager
    def full() -> Iterator[Path]:
        with _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", target=target) as mnt:
            with contextlib.suppress(OSError), open(mnt / "filler", "wb") as fh:
                for _ in range(64):
                    fh.write(b"\0" * 1024)
                    fh.flush()
            yield mnt

    return full()


# --------------------------------------------------------------------------- no stray runs
def test_a_failure_while_computing_leaves_the_store_untouched(compose_run, assets, monkeypatch):
    from steering.tracking import job

    db = assets["tmp"] / "mlflow.db"
    first = evaluate(compose_run(), results_dir=assets["tmp"] / "first")  # an existing store with one run
    before = _digest(db)

    def broken(*_a, **_k):
        raise ResultError("the evaluation broke half-way")

    monkeypatch.setattr(job, "evaluate_configuration", broken)
    with pytest.raises(ResultError):
        evaluate(compose_run("strength=2"), results_dir=assets["tmp"] / "second")
    assert [r.info.run_id for r in _runs(db)] == [first.run_id]
    assert _digest(db) == before
    assert not (assets["tmp"] / "second").exists()


def test_a_logged_run_is_complete_and_its_directory_says_so(compose_run, assets):
    out = assets["tmp"] / "out"
    result = evaluate(compose_run(), results_dir=out)
    run = mlflow.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db").get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["signals_leakage"] == "false" and run.data.params["strength"] == "1.0"
    assert run.data.metrics["dr_valence"] == pytest.approx(json.loads((out / "metrics.json").read_text())["dr_valence"])
    assert run.inputs.dataset_inputs  # the feature file, logged once the run exists
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "logged" and info["run_id"] == result.run_id


# --------------------------------------------------------------------------- implausible predictions
def test_predictions_far_off_the_scale_fail_the_run_with_results_kept_and_marked(compose_run, assets):
    from steering.tracking.results import sync

    out = assets["tmp"] / "out"
    with pytest.raises(ResultError) as info:
        evaluate(compose_run("method=bypass", "strength=1e20"), results_dir=out)
    line = _line(info.value)
    assert "implausible predictions: steered_" in line and str(out) in line
    assert _runs(assets["tmp"] / "mlflow.db") == []
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "rejected" and "implausible" in run["reason"]
    assert (out / "predictions.csv").is_file()
    with pytest.raises(ResultError, match="results were rejected"):
        sync(out)
    assert _runs(assets["tmp"] / "mlflow.db") == []


def test_the_plausible_range_is_the_ratings_and_baseline_widened_a_million_times():
    from steering.stats.run_metrics import implausible_predictions

    ratings = np.linspace(-1, 1, 9)
    frame = pd.DataFrame({t: ratings for t in ("valence", "arousal")})
    for t in ("valence", "arousal"):
        frame[f"base_{t}"] = ratings / 2
        frame[f"steered_{t}"] = ratings
    assert implausible_predictions(frame) is None
    frame.loc[3, "steered_valence"] = 1 + 1e6 * 2 - 1  # 999,999.5 widths of [-1, 1] above it
    assert implausible_predictions(frame) is None
    frame.loc[3, "steered_valence"] = 1 + 1e6 * 2 + 1
    assert "steered_valence reaches 2e+06" in implausible_predictions(frame)
    frame.loc[3, "steered_valence"] = 0.0
    frame["steered_arousal_draw1"] = -6.7e25  # a draw of the random controls counts too
    assert "steered_arousal reaches -6.7e+25" in implausible_predictions(frame)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=-1", "Value '-1' must be >= 0 (full_key: seed)"),
        ("metrics.seed=-5", "Value '-5' must be >= 0 (full_key: metrics.seed)"),
        ("alpha=1.5", "Value '1.5' must be <= 1.0 (full_key: alpha)"),
        ("alpha=-0.1", "Value '-0.1' must be >= 0.0 (full_key: alpha)"),
    ],
)
def test_options_out_of_range_are_refused_in_one_line(compose_config, override, expected):
    with pytest.raises(Exception) as info:
        compose_config(override)
    assert expected in _line(info.value)


def test_launcher_workers_of_zero_stop_the_sweep_before_it_starts(sweep_assets):
    tmp = sweep_assets["tmp"]
    proc, seconds = _app(
        "steering.run",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=0",
        "strength=1,2",
        *_run_args(sweep_assets, tmp, f"tracking.uri=sqlite:///{tmp}/jobs.db", f"hydra.sweep.dir={tmp}/sweep"),
        cwd=tmp,
    )
    assert _one_error_line(proc).startswith("error: hydra.launcher.n_jobs: 0 does not work")
    assert not (tmp / "jobs.db").exists() and not (tmp / "sweep").exists()
    assert seconds < LIMIT_S


def test_launcher_option_check_accepts_what_joblib_accepts():
    from steering.sweep.launcher_options import launcher_problem

    assert launcher_problem({"n_jobs": -1}) is None and launcher_problem({"n_jobs": 4}) is None
    assert launcher_problem({}) is None
    assert launcher_problem({"n_jobs": 0}).option == "hydra.launcher.n_jobs"
    assert launcher_problem({"tasks_per_node": 0}).option == "hydra.launcher.tasks_per_node"


# --------------------------------------------------------------------------- steering-train and model.checkpoint
def _train_config(compose_config, assets, tmp: Path, *overrides: str):
    from omegaconf import OmegaConf

    base = [
        f"data.path={assets['features']}",
        f"tracking.uri=sqlite:///{tmp}/train.db",
        f"demo.cache_dir={tmp}/demo",
        f"checkpoint={tmp}/tuned.pth",
        "train.epochs=1",
        "train.batch_size=16",
        "train.progress=false",
        "train.num_threads=1",
    ]
    return OmegaConf.to_object(compose_config(*base, *overrides, app="train"))


def test_train_fine_tunes_the_given_checkpoint(compose_config, assets):
    from steering.model.checkpoint import read_state
    from steering.tracking.training import train_logged

    tmp = assets["tmp"]
    start = read_state(assets["checkpoint"])
    cfg = _train_config(compose_config, assets, tmp, f"model.checkpoint={assets['checkpoint']}", "train.lr=1e-12")
    train_logged(cfg)
    tuned = read_state(tmp / "tuned.pth")
    conv = "visual_system.base.conv_block2.conv1.weight"
    assert tuned[conv].shape == start[conv].shape  # the checkpoint's architecture, not model.arch's
    assert torch.allclose(tuned[conv], start[conv], atol=1e-6)  # started from its weights
    (run,) = _runs(tmp / "train.db")
    assert run.data.tags["fine_tuned_from"] == str(assets["checkpoint"])


def test_train_refuses_to_write_over_the_checkpoint_it_fine_tunes(compose_config, assets):
    from steering.tracking.training import train_logged

    tmp, checkpoint = assets["tmp"], assets["checkpoint"]
    before = _digest(checkpoint)
    cfg = _train_config(compose_config, assets, tmp, f"model.checkpoint={checkpoint}", f"checkpoint={checkpoint}")
    with pytest.raises(ConfigError) as info:
        train_logged(cfg)
    assert _line(info.value).startswith(f"error: checkpoint: {checkpoint} is model.checkpoint")
    assert _digest(checkpoint) == before and _runs(tmp / "train.db") == []


# --------------------------------------------------------------------------- stores
def test_a_sqlite_file_of_another_program_is_refused_and_left_as_it_is(compose_run, assets):
    db = assets["tmp"] / "inventory.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE items (name TEXT, count INTEGER)")
        conn.execute("INSERT INTO items VALUES ('bolts', 40)")
        conn.commit()
    before = _digest(db)
    started = time.monotonic()
    with pytest.raises(TrackingError) as info:
        evaluate(compose_run(f"tracking.uri=sqlite:///{db}"), results_dir=assets["tmp"] / "out")
    line = _line(info.value)
    assert f"{db} is a SQLite database of something else (tables items)" in line
    assert _digest(db) == before and not (assets["tmp"] / "out").exists()
    assert time.monotonic() - started < LIMIT_S


def test_results_already_logged_are_logged_again_into_another_store(compose_run, assets):
    from steering.results import main as results_main

    tmp, out = assets["tmp"], assets["tmp"] / "out"
    first = evaluate(compose_run(), results_dir=out)
    other = f"sqlite:///{tmp}/other.db"
    assert results_main([str(out), "--tracking-uri", other]) == 0
    (copy,) = _runs(tmp / "other.db")
    assert copy.info.status == "FINISHED" and copy.info.run_id != first.run_id
    assert copy.data.metrics["dr_valence"] == pytest.approx(first.metrics["dr_valence"])
    assert copy.data.params["method.name"] == "lrm"  # the params come along
    info = json.loads((out / "run.json").read_text())
    assert info["run_id"] == first.run_id and info["copies"] == {other: copy.info.run_id}
    assert results_main([str(out), "--tracking-uri", other]) == 0  # once: no second copy
    assert len(_runs(tmp / "other.db")) == 1 and len(_runs(tmp / "mlflow.db")) == 1


# --------------------------------------------------------------------------- caches: forged checksums
def _shared(value: float):
    from steering.engine.core import SharedPass

    t = torch.full((2, 1), value)
    return SharedPass(
        first={"valence": t, "arousal": t},
        baseline={"valence": t, "arousal": t},
        own_modulations={},
        start_block=0,
        prefix=torch.zeros(2, 3),
    )


def test_a_chunk_rewritten_with_a_matching_sha256_is_still_rebuilt(tmp_path, monkeypatch, caplog):
    from steering.engine.store import SharedPassStore, shared_key

    monkeypatch.setenv("STEERING_CACHE_KEY", str(tmp_path / "secret" / "cache.key"))
    key = shared_key(model="m", data="d")
    SharedPassStore(key, tmp_path, "cpu").get(0, lambda: _shared(1.0))
    path = tmp_path / "shared" / key / "chunk_00000.pt"
    assert (tmp_path / "secret" / "cache.key").stat().st_mode & 0o777 == 0o600
    torch.save(_shared(5.0).state(), path)
    forged = hashlib.sha256(path.read_bytes()).hexdigest()
    for record in (forged, f"hmac-sha256 {forged}"):  # the old format, and the new one without the secret
        path.with_name(path.name + ".sha256").write_text(record + "\n")
        store = SharedPassStore(key, tmp_path, "cpu")
        assert float(store.get(0, lambda: _shared(1.0)).baseline["valence"][0]) == 1.0
        assert store.hits["computed"] == 1
    assert "rebuilding" in caplog.text


def test_a_valid_chunk_copied_under_another_key_is_rebuilt(tmp_path, monkeypatch):
    from steering.engine.store import SharedPassStore, shared_key

    monkeypatch.setenv("STEERING_CACHE_KEY", str(tmp_path / "cache.key"))
    one, two = shared_key(model="m", data="one"), shared_key(model="m", data="two")
    SharedPassStore(one, tmp_path, "cpu").get(0, lambda: _shared(1.0))
    SharedPassStore(two, tmp_path, "cpu").get(0, lambda: _shared(2.0))
    for name in ("chunk_00000.pt", "chunk_00000.pt.sha256"):  # entry and its record, moved together
        (tmp_path / "shared" / two / name).write_bytes((tmp_path / "shared" / one / name).read_bytes())
    store = SharedPassStore(two, tmp_path, "cpu")
    assert float(store.get(0, lambda: _shared(2.0)).baseline["valence"][0]) == 2.0
    assert store.hits["computed"] == 1
    again = SharedPassStore(two, tmp_path, "cpu")  # the rebuilt entry verifies
    assert float(again.get(0, lambda: _shared(9.0)).baseline["valence"][0]) == 2.0 and again.hits["disk"] == 1


# --------------------------------------------------------------------------- the machine's errors, one line each
def _nested_json(path: Path) -> object:
    return json.loads(path.read_text())


def _read_h5(path: Path, key: str) -> np.ndarray:
    """As the library's readers do: the file is closed again by the time the error is reported."""
    with h5py.File(path, "r") as h5:
        return h5[key][()]


def test_environment_errors_name_the_file_in_one_line(tmp_path):
    import yaml

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(RecursionError) as info:
        _nested_json(deep)
    assert _line(info.value) == f"error: {deep}: nested too deeply to read (RecursionError)"

    tagged = tmp_path / "binning.yaml"
    tagged.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(yaml.YAMLError) as info, open(tagged) as fh:
        yaml.safe_load(fh)
    assert _line(info.value).startswith(f"error: {tagged}: not valid YAML here (could not determine a constructor")

    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as h5:
        h5["feature"] = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/feature")
    with pytest.raises(KeyError) as info:
        _read_h5(linked, "feature")
    assert _line(info.value).startswith(f"error: {linked}: HDF5 error (")

    with pytest.raises(MemoryError) as info:
        np.empty((1 << 40, 1 << 20), dtype=np.float32)
    assert "out of memory (Unable to allocate" in _line(info.value)


def test_disk_full_for_the_store_keeps_the_results_and_creates_no_run(assets, tmp_path):
    tmp = assets["tmp"]
    with _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", target=tmp_path / "small") as small:
        proc, seconds = _app(
            "steering.run",
            *_run_args(assets, tmp, f"tracking.uri=sqlite:///{small}/mlflow.db", f"hydra.run.dir={tmp}/out"),
            cwd=tmp,
        )
        line = _one_error_line(proc)
        assert f"error: sqlite:///{small}/mlflow.db: logging failed" in line and "No space left" in line
        assert f"the results are in {tmp}/out" in line
        assert not (small / "mlflow.db").exists() and not list(small.glob("*.tmp"))
    assert json.loads((tmp / "out" / "run.json").read_text())["status"] == "computed"
    assert seconds < LIMIT_S


def test_disk_full_for_the_output_dir_is_one_line(assets, tmp_path):
    tmp = assets["tmp"]
    with _full_tmpfs(tmp_path / "full") as full:
        proc, seconds = _app(
            "steering.run",
            *_run_args(assets, tmp, f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"hydra.run.dir={full}/out"),
            cwd=tmp,
        )
        assert _one_error_line(proc).startswith(f"error: {full}/out")
        assert "no space left on the device (disk full)" in proc.stderr
    assert _runs(tmp / "mlflow.db") == [] and seconds < LIMIT_S


def test_disk_full_for_the_prepared_feature_file_is_one_line_and_leaves_nothing(tmp_path):
    with _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", target=tmp_path / "small") as small:
        proc, seconds = _app(
            "steering.prepare",
            "source=synthetic",
            "source.n_clips=4",
            "source.duration=0.5",
            f"output={small}/features.h5",
            f"hydra.run.dir={tmp_path}/out",
            cwd=tmp_path,
        )
        assert _one_error_line(proc) == f"error: {small}/features.h5: no space left on the device (disk full)"
        assert list(small.iterdir()) == []
    assert seconds < LIMIT_S


def test_read_only_output_and_cache_dirs_are_one_line(assets, compose_run, tmp_path):
    tmp = assets["tmp"]
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "kept.txt").write_text("kept")
    with _mount("--bind", "-o", "ro", str(tmp_path / "source"), target=tmp_path / "ro") as ro:
        proc, seconds = _app(
            "steering.run",
            *_run_args(assets, tmp, f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"hydra.run.dir={ro}/out"),
            cwd=tmp,
        )
        assert _one_error_line(proc) == f"error: {ro}/out: read-only file system"
        full = subprocess.run(
            [sys.executable, "-m", "steering.run", f"hydra.run.dir={ro}/out"],
            capture_output=True,
            text=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(ROOT)},
            timeout=300,
            cwd=tmp,
        )
        assert full.returncode != 0 and "Traceback" in full.stderr  # the traceback on request
        with pytest.raises(ConfigError) as info:
            evaluate(compose_run(f"cache.dir={ro}/cache"), results_dir=tmp / "out2")
        assert _line(info.value) == f"error: cache.dir: cannot write into {ro} (Read-only file system)"
        assert sorted(p.name for p in ro.iterdir()) == ["kept.txt"]
    assert _runs(tmp / "mlflow.db") == [] and not (tmp / "out2").exists() and seconds < LIMIT_S
