"""Real processes: SIGTERM during sweeps (basic and joblib launchers) and training, SIGKILL of a joblib
sweep, a tracking server killed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from steering.data import write_feature_file

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["method=lrm,bypass,modulation,direct", "layer=conv3,conv4"]
PLANNED = 8


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def _env() -> dict[str, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _sweep_cmd(assets, db: str, sweep_dir: Path, *overrides: str) -> list[str]:
    tmp = assets["tmp"]
    return [
        sys.executable,
        "-m",
        "steering.run",
        "-m",
        *SWEEP,
        *overrides,
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        f"tracking.uri=sqlite:///{tmp}/{db}",
        f"cache.dir={tmp}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


#: An interrupted sweep's process is gone within this many seconds (measured: 1-4 s on a loaded
#: 2-core machine; the clean-up cuts itself short after 10 s).
STOP_WITHIN = 30


def _terminate_after_first_result(cmd: list[str], sweep_dir: Path, cwd: Path) -> tuple[int, set[int], str]:
    """Start the sweep, SIGTERM it once a job wrote its results; (exit code, its processes then, stderr).
    The sweep must be gone within :data:`STOP_WITHIN` seconds of the signal."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while not list(sweep_dir.glob("*/run.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    family = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep was still running {STOP_WITHIN} s after SIGTERM: {proc.communicate()[1][-3000:]}")
    assert time.monotonic() - sent < STOP_WITHIN
    return proc.returncode, family, stderr


def _sweep_runs(uri: str, sweep_dir: Path):
    info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    client = MlflowClient(uri)
    everything = client.search_runs([info["experiment_id"]])
    return client, info, everything


def _check_interrupted(assets, db: str, sweep_dir: Path, rc: int, stderr: str) -> int:
    uri = f"sqlite:///{assets['tmp']}/{db}"
    assert rc == 128 + signal.SIGTERM, stderr[-3000:]
    # one line on the terminal's error stream: interrupted, and where the results so far are
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (SIGTERM)"), stderr[-3000:]
    assert str(sweep_dir) in lines[0] and "resume=true" in lines[0]
    client, info, runs = _sweep_runs(uri, sweep_dir)
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parent = client.get_run(info["run_id"])
    assert parent.info.status == "KILLED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["run_id"]]
    finished = sum(r.info.status == "FINISHED" for r in children)
    assert finished < PLANNED
    never = PLANNED - len(children)
    assert parent.data.metrics["n_not_run"] == never
    assert f"{never} of {PLANNED} planned jobs never ran" in (sweep_dir / "comparison.md").read_text()
    return finished


def _resume_completes(assets, db: str, name: str, finished_before: int) -> None:
    sweep_dir = assets["tmp"] / name
    cmd = _sweep_cmd(assets, db, sweep_dir, "resume=true")
    proc = subprocess.run(cmd, cwd=assets["tmp"], env=_env(), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert len(table) == PLANNED and (table["status"] == "FINISHED").all()
    client, info, runs = _sweep_runs(f"sqlite:///{assets['tmp']}/{db}", sweep_dir)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["run_id"]]
    resumed = [r for r in children if "resumed_from" in r.data.tags]
    assert len(resumed) == finished_before  # finished jobs were not computed again
    assert all(r.info.status != "RUNNING" for r in runs)


def test_sigterm_during_a_basic_sweep_leaves_nothing_running_and_resume_completes(assets):
    sweep_dir = assets["tmp"] / "basic"
    rc, _, stderr = _terminate_after_first_result(_sweep_cmd(assets, "basic.db", sweep_dir), sweep_dir, assets["tmp"])
    finished = _check_interrupted(assets, "basic.db", sweep_dir, rc, stderr)
    _resume_completes(assets, "basic.db", "basic-resumed", finished)


def test_sigterm_during_a_joblib_sweep_stops_workers_and_server(assets):
    sweep_dir = assets["tmp"] / "joblib"
    joblib = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    rc, family, stderr = _terminate_after_first_result(
        _sweep_cmd(assets, "joblib.db", sweep_dir, *joblib), sweep_dir, assets["tmp"]
    )
    finished = _check_interrupted(assets, "joblib.db", sweep_dir, rc, stderr)
    assert family, "the sweep had no worker or server processes to check"
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [p for p in family if _alive(p)]
    assert not survivors, [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in survivors]
    # Resumed with the basic launcher: the same resume logic, without a second server start-up.
    _resume_completes(assets, "joblib.db", "joblib-resumed", finished)


def test_tracking_server_killed_mid_run_fails_in_bounded_time_and_results_sync_later(assets, make_feature_arrays):
    from steering.sweep.server import start_server

    tmp = assets["tmp"]
    backend = f"sqlite:///{tmp}/served.db"
    client = MlflowClient(backend)
    # As a sweep does it: the experiment exists (artifacts on local disk) before the server starts.
    client.create_experiment("steering", artifact_location=str(tmp / "served-artifacts"))
    server = start_server(backend, tmp / "server-logs", timeout=180)
    out = tmp / "served-run"
    features = write_feature_file(tmp / "big.h5", *make_feature_arrays(n=1200, frames=32, seed=3))
    cmd = [
        sys.executable,
        "-m",
        "steering.run",
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={features}",
        f"tracking.uri={server.uri}",
        f"cache.dir={tmp}/served-cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=20000",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            # the signals are cached just before the evaluation starts (the run opens only after it)
            if list((tmp / "served-cache").glob("signals_*.json.sha256")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before the server could be killed"
    finally:
        server.stop()
    _, stderr = proc.communicate(timeout=300)
    # From the results on disk (the computation goes on after the kill) to the exit: MLflow's own
    # retries would take ~8 minutes.
    assert time.time() - (out / "metrics.json").stat().st_mtime < 120
    assert proc.returncode == 2, stderr[-3000:]
    line = [ln for ln in stderr.splitlines() if ln.startswith("error: ")][-1]
    assert "logging failed" in line and str(out) in line and "python -m steering.results" in line
    assert (out / "metrics.json").is_file() and (out / "predictions.csv").is_file()
    # Later, with the store reachable again, the results are logged without recomputing.
    sync = subprocess.run(
        [sys.executable, "-m", "steering.results", str(out), "--tracking-uri", backend],
        cwd=tmp,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    run = client.get_run(json.loads((out / "run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["dr_valence"] == pytest.approx(json.loads((out / "metrics.json").read_text())["dr_valence"])


def test_resume_marks_running_runs_of_dead_processes_failed(tmp_path):
    import socket

    from steering.tracking.resume import fail_dead_runs, fail_dead_sweeps

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("steering", artifact_location=str(tmp_path / "art"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()

    def running(pid: int, **tags: str) -> str:
        return client.create_run(exp, tags={"process_id": str(pid), "process_host": host, **tags}).info.run_id

    dead = running(gone.pid, config_hash="abc")
    alive = running(os.getpid(), config_hash="abc")
    other = running(gone.pid, config_hash="xyz")
    assert fail_dead_runs(f"sqlite:///{tmp_path}/m.db", "steering", "abc") == 1
    status = {r: client.get_run(r).info.status for r in (dead, alive, other)}
    assert status == {dead: "FAILED", alive: "RUNNING", other: "RUNNING"}
    parent = running(gone.pid, sweep_role="parent")
    child = running(gone.pid, **{"mlflow.parentRunId": parent})
    assert fail_dead_sweeps(client, exp) == 2
    assert {client.get_run(r).info.status for r in (parent, child)} == {"FAILED"}


def test_sigterm_wrapped_in_a_library_error_still_ends_as_interrupted(monkeypatch, capsys):
    """A SIGTERM that lands inside a library (Hydra composing the next job) may come back as another
    exception; the app must still exit 143 with the interrupted line, not a one-line config error."""
    from steering import cli, errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    previous = signal.getsignal(signal.SIGTERM)

    def composing_the_next_job() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises during this call
        except KeyboardInterrupt as exc:
            raise errors.ConfigError("arch.connections", "'NoneType' object has no attribute") from exc

    try:
        with pytest.raises(SystemExit) as info:
            cli.run_app(composing_the_next_job)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "error: interrupted (SIGTERM)"


def test_the_sweep_notices_an_interrupt_and_the_previous_handler_still_acts():
    """The callback's watch marks its sweep interrupted, then Ctrl-C raises KeyboardInterrupt as before;
    once removed, the previous handler is back."""
    from steering.sweep.interrupt import InterruptWatch

    noticed = []
    # Python's own Ctrl-C handler, also when pytest runs as a background job (which inherits SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watch = InterruptWatch(lambda: noticed.append(True))
        watch.install()
        try:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler raises during this call
        finally:
            watch.remove()
        assert noticed == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def _job_started(sweep_dir: Path) -> bool:
    """A job of the sweep is past its start (it loaded the checkpoint)."""
    return any("ignoring" in log.read_text() for log in sweep_dir.glob("*/run.log"))


def test_sigkill_of_a_joblib_sweep_leaves_no_worker_and_jobs_are_reported_as_they_end(assets):
    """Nothing can clean up after SIGKILL: the loky workers must end with their parent by themselves.
    Before that, the parent printed each job's end while the workers ran."""
    sweep_dir = assets["tmp"] / "joblib-killed"
    cmd = _sweep_cmd(assets, "joblib-killed.db", sweep_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    out = assets["tmp"] / "joblib-killed.out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(cmd, cwd=assets["tmp"], env=_env(), stdout=stdout, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if "[1/8] job " in out.read_text() and _job_started(sweep_dir):
                break
            time.sleep(0.2)
        assert proc.poll() is None, out.read_text()[-3000:]
        time.sleep(1)  # the next job is past its start too
        session = os.getsid(proc.pid)
        family = {p for p in _descendants(proc.pid) if _alive(p) and os.getsid(p) == session}  # not the server
        assert family, "the sweep had no worker processes to check"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in family if _alive(p)]
        assert not survivors, survivors
    finally:
        proc.kill()
        for pid in _descendants(1):  # the sweep's private MLflow server runs in its own session: stop it
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if _alive(pid) else b""
            if str(sweep_dir).encode() in cmdline or b"joblib-killed.db" in cmdline:
                with contextlib.suppress(OSError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
    reported = [ln for ln in out.read_text().splitlines() if "] job " in ln]
    assert reported and "[1/8] job " in reported[0] and ("finished in" in reported[0] or "FAILED" in reported[0])
    assert "method=" in reported[0] and "layer=" in reported[0]  # the job's swept choices


def test_progress_lines_name_each_job_once_with_its_choices(tmp_path):
    from steering.sweep.workers import JobProgress, record_job_end

    progress = JobProgress(tmp_path, planned=3, varied=["method", "strength"])
    assert progress.poll() == []
    record_job_end(tmp_path, 1, "COMPLETED", 12.4, ["method=bypass", "strength=2", "seed=3"])
    record_job_end(tmp_path, 0, "FAILED", 3.0, ["method=lrm", "strength=0"], "ValueError: bad")
    lines = progress.poll()
    assert len(lines) == 2 and progress.poll() == []
    finished = next(ln for ln in lines if "job 1 " in ln)
    failed = next(ln for ln in lines if "job 0 " in ln)
    assert "finished in 12 s" in finished and "method=bypass strength=2" in finished and "seed" not in finished
    assert "FAILED" in failed and "ValueError: bad" in failed
    assert {ln.split("]")[0] for ln in lines} == {"[1/3", "[2/3"}


def test_an_interrupted_sweeps_clean_up_is_cut_short_when_slow_or_interrupted_again(tmp_path):
    """The clean-up's own bound: a hung clean-up ends after its time, a second SIGTERM ends it at once."""
    code = (
        "import time; from pathlib import Path; from steering.sweep.interrupt import bounded_cleanup\n"
        f"with bounded_cleanup(Path({str(tmp_path)!r}), seconds=float(__import__('sys').argv[1])):\n"
        "    print('cleaning', flush=True); time.sleep(60)\n"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, "1"], env=_env(), capture_output=True, text=True, timeout=STOP_WITHIN
    )
    assert proc.returncode == 128 + signal.SIGTERM and time.monotonic() - start < STOP_WITHIN
    assert proc.stderr.strip().count("\n") == 0 and "clean-up took over 1 s" in proc.stderr
    assert str(tmp_path) in proc.stderr
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "120"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "cleaning"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=STOP_WITHIN)
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted again" in stderr


def test_sigterm_during_training_ends_its_run_killed(assets, make_feature_arrays):
    tmp = assets["tmp"]
    uri = f"sqlite:///{tmp}/train.db"
    features = write_feature_file(
        tmp / "train.h5", *make_feature_arrays(n=40, frames=64, seed=0)
    )  # training needs 64 frames
    cmd = [
        sys.executable,
        "-m",
        "steering.train",
        f"data.path={features}",
        f"tracking.uri={uri}",
        "train.epochs=10000",
        "train.batch_size=8",
        "train.progress=false",
        "train.num_threads=1",
        f"checkpoint={tmp}/train.pth",
        f"hydra.run.dir={tmp}/train-run",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 300
        run = None
        while time.monotonic() < deadline and proc.poll() is None and run is None:
            experiment = client.get_experiment_by_name("steering-train") if (tmp / "train.db").exists() else None
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            run = next((r for r in runs if "train_loss" in r.data.metrics), None)  # an epoch was logged
            time.sleep(0.2)
        assert run is not None, proc.communicate(timeout=60)[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=STOP_WITHIN)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert [ln for ln in stderr.splitlines() if ln.strip()] == ["error: interrupted (SIGTERM)"]
    assert client.get_run(run.info.run_id).info.status == "KILLED"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped Terminated, on purpose
def test_an_interrupt_python_dropped_inside_a_weakref_callback_still_ends_the_sweep_at_the_next_job():
    """A handler runs between any two bytecodes; inside a weakref callback its Terminated is printed and
    dropped (seen: a SIGTERMed sweep that ran on to exit 0). The sweep's next job boundary acts on it again."""
    import weakref

    from steering.errors import Terminated
    from steering.sweep.callback import MlflowSweepCallback
    from steering.sweep.interrupt import InterruptWatch

    def raise_terminated(signum, _frame):  # what steering.cli installs for SIGTERM
        raise Terminated(f"signal {signum}")

    inherited = signal.signal(signal.SIGTERM, raise_terminated)
    callback = MlflowSweepCallback()
    callback._sweep = types.SimpleNamespace(interrupted=False, done=False)
    callback._watch = InterruptWatch(callback.mark_interrupted)
    callback._watch.install()
    try:
        callback.on_job_start(config=None, task_function=None)  # no interrupt yet: nothing happens

        class Clip:
            pass

        clip = Clip()
        ref = weakref.ref(clip, lambda _ref: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(1)))
        del clip  # the callback runs here; the handler's Terminated is raised inside it and dropped
        assert ref() is None and callback._sweep.interrupted
        with pytest.raises(Terminated):
            callback.on_job_start(config=None, task_function=None)
    finally:
        callback._watch.remove()
        signal.signal(signal.SIGTERM, inherited)
