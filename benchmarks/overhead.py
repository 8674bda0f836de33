"""Time what a steering job and a sweep cost beyond the steering itself, on the embedded demo, CLI only.

It runs, from a temporary working directory and with the demo cached under ``--cache-dir``:

(a) one standalone run, ``python -m steering.run method=bypass strength=1`` (warm demo cache,
    existing MLflow store);
(b) a warm ``--jobs``-job strength sweep, ``python -m steering.run -m method=bypass strength=0,0.1,...``
    (Hydra's basic launcher), once into a fresh MLflow store and once into the existing one.

Every figure comes from outside the code under test (the process's wall time, the timestamps of the
log lines Hydra and the jobs write, the start/end times of the runs in the SQLite store), so the
script measures the same thing before and after a refactor of ``steering``. A job's span runs from
Hydra's ``#N : ...`` launch line (before Hydra composes that job's config) to the next job's launch
line (the last job: the last line of its own log file), so the jobs' spans and the sweep's overhead
add up to its wall time. The sweep's overhead is split at log lines (MLflow's "Creating initial
MLflow database tables", the callback's "sweep ...: parent run" and "... jobs finished", Hydra's
"Launching"); a phase whose line is missing merges into its neighbour (a store copied from the
migrated template under the cache directory logs no "Creating initial ..." line: store creation then
merges into the phase before it). Machine load stretches every
figure: compare runs made under the same load; the CPU seconds (user + sys) of each process and the
sweep's wall/CPU ratio show how much.

Usage: ``python benchmarks/overhead.py [--jobs 20] [--cache-dir DIR] [--keep]``. The first use of a
cache directory builds the demo (a few minutes). The last lines are ``per job after the first:
X.XX s``, ``sweep overhead beyond its jobs: X.X s`` (the sweep's wall time minus its jobs: interpreter
start, imports, composing every job up front, the parent run, the end-of-sweep report) and
``sweep overhead: X.X s`` measured against the single run (the sweep's wall time minus the single
run's and minus the further jobs: what running them as a sweep adds), all for the sweep into a
fresh store.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
LAUNCH = re.compile(r"\[HYDRA\]\s+#(\d+) : ")
STORE_CREATED = "Creating initial MLflow database tables"
SWEEP_DONE = re.compile(r"jobs finished")
PARENT_OPENED = re.compile(r"\bsweep \S+: parent run ")
LAUNCHING = "Launching "


@dataclass(frozen=True)
class Timed:
    """One CLI process: wall-clock start and end (epoch seconds), CPU seconds (user + sys), combined output."""

    start: float
    end: float
    cpu: float
    log: Path

    @property
    def wall(self) -> float:
        return self.end - self.start


def stamped(path: Path) -> list[tuple[float, str]]:
    """(epoch seconds, line) of every line that starts with a log timestamp (local time, ms)."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        match = STAMP.match(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append((when, line))
    return lines


def run_cli(args: list[str], workdir: Path, env: dict[str, str], log: Path) -> Timed:
    """Run ``python -m steering.run ARGS`` from ``workdir``; stop the benchmark if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "steering.run", *args], cwd=workdir, env=env, stdout=out, stderr=out
        )
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        sys.exit(f"overhead.py: steering.run {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(start, end, cpu, log)


def job_logs(sweep_dir: Path, jobs: int) -> list[list[tuple[float, str]]]:
    """The stamped lines of each job's own log file (Hydra writes one ``*.log`` per job directory)."""
    found = []
    for num in range(jobs):
        files = sorted((sweep_dir / str(num)).glob("*.log"))
        found.append(stamped(files[0]) if files else [])
    return found


def job_spans(timed: Timed, sweep_dir: Path, jobs: int) -> list[tuple[float, float]]:
    """(start, end) of each job: its launch line to the next launch line (the last job: its last log line)."""
    launches: dict[int, float] = {}
    for when, line in stamped(timed.log):
        match = LAUNCH.search(line)
        if match:
            launches.setdefault(int(match.group(1)), when)
    logs = job_logs(sweep_dir, jobs)
    if sorted(launches) != list(range(jobs)):
        sys.exit(f"overhead.py: found launch lines for jobs {sorted(launches)} in {timed.log}, expected 0..{jobs - 1}")
    ends = [launches[n + 1] for n in range(jobs - 1)] + [logs[-1][-1][0] if logs[-1] else timed.end]
    return [(launches[n], ends[n]) for n in range(jobs)]


def mlflow_spans(db: Path, since: float) -> list[float]:
    """Seconds from start to end of each nested (job) run started after ``since``, read from the SQLite store."""
    query = (
        "SELECT r.start_time, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'mlflow.parentRunId' AND r.start_time >= ? AND r.end_time IS NOT NULL ORDER BY r.start_time"
    )
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(query, (int(since * 1000),)).fetchall()
    return [(end - start) / 1000 for start, end in rows]


def first_match(lines: list[tuple[float, str]], pattern: re.Pattern | str, after: float = 0.0) -> float | None:
    for when, line in lines:
        hit = pattern.search(line) if isinstance(pattern, re.Pattern) else pattern in line
        if hit and when >= after:
            return when
    return None


def sweep_phases(timed: Timed, spans: list[tuple[float, float]], per_job: float) -> list[tuple[str, float]]:
    """The sweep's wall time beyond ``per_job`` per job, split at the log lines that mark its phases."""
    lines = stamped(timed.log)
    created = first_match(lines, STORE_CREATED)
    opened = first_match(lines, PARENT_OPENED)
    launching = first_match(lines, LAUNCHING)
    first_job, last_end = spans[0][0], spans[-1][1]
    done = first_match(lines, SWEEP_DONE, after=last_end) or timed.end
    phases: list[tuple[str, float]] = []
    if created is not None and opened is not None:
        phases.append(("interpreter start, imports, composing the sweep config", created - timed.start))
        phases.append(("store creation (tables, migrations) and the parent run", opened - created))
    elif opened is not None:
        phases.append(
            ("interpreter start, imports, composing, opening the store, the parent run", opened - timed.start)
        )
    start_batch = launching or first_job
    if opened is not None:
        phases.append(("Hydra composing every job's config up front (batch check)", start_batch - opened))
    else:
        phases.append(("start until the first job (no parent-run line found)", start_batch - timed.start))
    phases.append(("launcher set-up until job 0", first_job - start_batch))
    phases.append(("first job beyond a later job (cold imports, shared work)", (spans[0][1] - spans[0][0]) - per_job))
    jobs_rest = sum(end - start for start, end in spans[1:]) - per_job * (len(spans) - 1)
    phases.append(("spread of the later jobs around their median", jobs_rest))
    phases.append(("end of sweep: comparison table, analyses, figures, logging them", done - last_end))
    phases.append(("interpreter exit", timed.end - done))
    return phases


def report_single(timed: Timed, run_dir: Path) -> None:
    """The standalone run's wall time, split at its own log file's first and last lines."""
    files = sorted(run_dir.glob("*.log"))
    lines = stamped(files[0]) if files else []
    print(f"(a) single run, warm caches, existing store: wall {timed.wall:.1f} s, CPU {timed.cpu:.1f} s")
    if lines:
        first, last = lines[0][0], lines[-1][0]
        print(f"    {first - timed.start:6.1f} s  interpreter start, imports, composing, checks, until the demo files")
        print(f"    {last - first:6.1f} s  the job's first -> last log line (model, signals, MLflow run, steering)")
        print(f"    {timed.end - last:6.1f} s  after its summary line (interpreter exit)")


def report_sweep(title: str, timed: Timed, sweep_dir: Path, db: Path, jobs: int) -> tuple[float, float]:
    """Print the sweep's figures; returns (per job after the first, overhead beyond the jobs)."""
    spans = job_spans(timed, sweep_dir, jobs)
    durations = [end - start for start, end in spans]
    later = durations[1:]
    per_job = statistics.median(later)
    overhead = timed.wall - per_job * jobs
    logs = job_logs(sweep_dir, jobs)
    to_first_line = [logs[n][0][0] - spans[n][0] for n in range(1, jobs) if logs[n]]
    in_log = [lines[-1][0] - lines[0][0] for lines in logs[1:] if lines]
    runs = mlflow_spans(db, timed.start)[1:]
    print(f"\n{title}: wall {timed.wall:.1f} s for {jobs} jobs, CPU {timed.cpu:.1f} s")
    print(
        f"  job 0: {durations[0]:.2f} s; later jobs: median {per_job:.2f} s "
        f"(min {min(later):.2f}, max {max(later):.2f})"
    )
    parts = [
        ("launch line -> job's first log line (composing its config, checks, demo files)", to_first_line),
        ("job's first -> last log line (model, signals, MLflow run, steering, results)", in_log),
        ("MLflow job run, start -> end (inside the line above)", runs),
    ]
    for name, values in parts:
        if values:
            print(f"    {statistics.median(values):6.2f} s  {name}")
    print(f"  overhead beyond {jobs} x {per_job:.2f} s: {overhead:.1f} s")
    for name, seconds in sweep_phases(timed, spans, per_job):
        print(f"    {seconds:6.1f} s  {name}")
    return per_job, overhead


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="strengths in the sweep (default 20)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("STEERING_CACHE_DIR") or ROOT / ".cache" / "steering"),
        help="demo cache (default: $STEERING_CACHE_DIR, else .cache/steering in the checkout, as `make run`)",
    )
    parser.add_argument("--resamples", type=int, default=2000, help="metrics.bootstrap_resamples (default 2000)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (stores, logs, sweeps)")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs must be at least 2")
    return args


def main() -> None:
    args = options()
    work = Path(tempfile.mkdtemp(prefix="steering-overhead-"))
    env = {
        **os.environ,
        "STEERING_CACHE_DIR": str(args.cache_dir.resolve()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    existing, fresh = work / "existing.db", work / "fresh.db"
    common = [f"metrics.bootstrap_resamples={args.resamples}", "demo.progress=false"]
    single = ["method=bypass", "strength=1", *common, f"tracking.uri=sqlite:///{existing}"]
    strengths = ",".join(f"{i / 10:g}" for i in range(args.jobs))
    sweep = ["-m", "method=bypass", f"strength={strengths}", *common]
    print(f"steering from {ROOT}, demo cache {args.cache_dir}, work dir {work}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    try:
        warm = run_cli([*single, f"hydra.run.dir={work / 'warmup'}"], work, env, work / "warmup.log")
        print(f"warm-up run (builds the demo and fills the caches when missing; new store): {warm.wall:.1f} s")
        one = run_cli([*single, f"hydra.run.dir={work / 'single'}"], work, env, work / "single.log")
        report_single(one, work / "single")
        results = {}
        for name, db in (("fresh", fresh), ("existing", existing)):
            sweep_dir = work / f"sweep-{name}"
            args_ = [*sweep, f"tracking.uri=sqlite:///{db}", f"hydra.sweep.dir={sweep_dir}"]
            timed = run_cli(args_, work, env, work / f"sweep-{name}.log")
            results[name] = report_sweep(f"(b) sweep, {name} store", timed, sweep_dir, db, args.jobs)
            stretch = timed.wall / timed.cpu if timed.cpu else float("nan")
            print(f"  wall / CPU {stretch:.1f}: on a quiet machine expect roughly the figures divided by this")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end; single run {one.wall:.1f} s")
        per_job, overhead = results["fresh"]
        # What the sweep adds to the same work done as one standalone run plus (jobs - 1) further jobs:
        # the interpreter start, imports and the first job's cold work are paid by the single run too.
        sweep_wall = overhead + per_job * args.jobs
        versus_single = sweep_wall - one.wall - per_job * (args.jobs - 1)
        print(f"per job after the first: {per_job:.2f} s")
        print(f"sweep overhead beyond its jobs: {overhead:.1f} s")
        print(f"sweep overhead: {versus_single:.1f} s (beyond the single run and {args.jobs - 1} more jobs)")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
