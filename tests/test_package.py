"""The installable package: a built wheel carries the configs and presets and works from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "steering", "hydra_plugins", "conf", "experiments")


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the checkout (no stale build/ of the working tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(src)]
    sh(cmd, cwd=tmp)
    (built,) = tmp.glob("steering-*.whl")
    return built


def test_wheel_carries_configs_presets_schemas_and_console_scripts(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for rel in ["conf/run.yaml", "conf/binning/25bin.yaml", "conf/hydra/help/run.yaml", "conf/source/folder.yaml"]:
        assert f"steering/{rel}" in names, rel
    presets = {p.name for p in (ROOT / "experiments").glob("*.yaml")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("steering/conf/experiment/")} == presets
    assert "hydra_plugins/steering_schemas/__init__.py" in names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "steering").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every module of the library and the apps
    for app in ("run", "signals", "train", "prepare", "report"):
        assert f"steering-{app} = " in entry_points


@pytest.mark.slow
def test_installed_wheel_runs_from_any_directory(wheel, tmp_path):
    """Install into a fresh venv (dependencies visible from this interpreter, nothing downloaded)."""
    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    purelib = Path(
        sh(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    # The dependencies (torch, mlflow, hydra ...) come from this environment through a path entry that
    # follows the venv's own site-packages, so the installed steering is the one imported.
    (purelib / "zz_steering_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # --ignore-installed: the steering of this environment (visible through the path entry) is left alone.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed"]
    sh([*pip, "-q", str(wheel)], cwd=tmp_path, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = sh(
        [str(venv / "bin" / "python"), "-c", "import steering.config as c; print(c.__file__, c.config_dir())"],
        cwd=work,
        env=env,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]) == Path(where[0]).parents[1] / "conf"

    job = sh([str(venv / "bin" / "steering-run"), "--cfg", "job"], cwd=work, env=env).stdout
    assert "strength: 1.0" in job and "name: 9bin" in job and "category:" in job
    hydra = sh([str(venv / "bin" / "steering-run"), "+experiment=methods", "--cfg", "hydra"], cwd=work, env=env).stdout
    assert "mode: MULTIRUN" in hydra and "method: lrm,bypass,modulation,direct" in hydra
    assert sh([str(venv / "bin" / "steering-report"), "--help"], cwd=work, env=env).stdout.startswith("steering-report")
    bad = subprocess.run(
        [str(venv / "bin" / "steering-run"), "batch_size=-1"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "full_key: batch_size" in bad.stderr
    assert list(work.iterdir()) == []


def test_gitignore_covers_what_the_tools_write_and_no_tracked_file():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = [
        "reports/x.md",
        "mlruns/0/meta.yaml",
        "mlartifacts/1/a.csv",
        "mlflow.db",
        "outputs/2026/x.log",
        "multirun/2026/0/x.log",
        ".cache/steering/demo/model.pth",
        "build/lib/x.py",
        "dist/x.whl",
    ]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True)
    assert set(ignored.stdout.split()) == set(written)
    tracked = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.returncode == 0 and tracked.stdout == ""
