"""What a run records about its inputs: the code's commit and the exact signal samples (issue 9)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow

from steering.data import FeatureFile, split_indices
from steering.tracking.job import evaluate
from steering.tracking.runs import git_commit

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_comes_from_the_package_not_the_working_directory(tmp_path, monkeypatch):
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "rev-parse"]).returncode:
        import pytest

        pytest.skip("the package is not in a git checkout here")
    monkeypatch.chdir(tmp_path)  # outside any repository
    expected = _git("rev-parse", "HEAD", cwd=ROOT)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=ROOT))
    assert git_commit() == expected + ("-dirty" if dirty else "")


def test_git_commit_marks_a_dirty_tree_and_is_unknown_outside_git(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "f.txt").write_text("a")
    _git("add", "f.txt", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", cwd=repo)
    sha = _git("rev-parse", "HEAD", cwd=repo)
    assert git_commit(repo) == sha
    (repo / "f.txt").write_text("b")
    assert git_commit(repo) == sha + "-dirty"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_commit(plain) == "unknown"


def test_git_commit_of_a_run_started_elsewhere(tmp_path):
    code = "from steering.tracking.runs import git_commit; print(git_commit())"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split("-")[0] == _git("rev-parse", "HEAD", cwd=ROOT)


def test_signals_follow_train_fraction_instead_of_reusing_another_split(assets, compose_run):
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")

    def indices(result) -> set[int]:
        import json

        path = client.download_artifacts(result.run_id, "signals_9bin.json", str(assets["tmp"] / result.run_id))
        return set(json.loads(Path(path).read_text())["metadata"]["indices"])

    seventy = evaluate(compose_run())
    sixty = evaluate(compose_run("data.train_fraction=0.6"))
    with FeatureFile(assets["features"]) as ff:
        expected = set(split_indices(len(ff), "train", "threeway", 0.6).tolist())
    assert indices(sixty) == expected != indices(seventy)
    assert sixty.tags["signals_leakage"] == "false"
