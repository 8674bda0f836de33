"""The command line: fast --help/--cfg without torch or MLflow, help texts, presets that sweep without -m."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from steering.data import write_feature_file

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MODULES = {
    "run": "steering.run",
    "signals": "steering.signals",
    "train": "steering.train",
    "prepare": "steering.prepare",
    "report": "steering.report",
}
HEAVY = ("torch", "mlflow", "pandas", "matplotlib", "scipy", "h5py")


def app(module: str, *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_help_and_cfg_load_neither_torch_nor_mlflow(name, tmp_path):
    """What makes --help, --cfg and Tab fast: only Hydra and OmegaConf load before composition."""
    for flag in ("--help", "--cfg job"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", MODULES[name], *flag.split()],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
        assert "hydra" in imported
        assert not imported & set(HEAVY), (flag, sorted(imported & set(HEAVY)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_help_describes_the_app_its_groups_and_options(name, tmp_path):
    proc = app(MODULES[name], "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert text.startswith(f"steering-{name}: ")
    assert f"steering-{name} --cfg job" in text and "--hydra-help" in text
    # Every group the app composes is listed with every option that exists in conf/.
    defaults = OmegaConf.load(CONF / f"{name}.yaml").defaults
    groups = [k for entry in defaults if not isinstance(entry, str) for k in entry if not k.startswith("override")]
    assert groups
    for group in groups:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{group} "))
        listed = {o.strip() for o in line.split(None, 1)[1].split("  ")[0].split(",")}
        assert listed == {p.stem for p in (CONF / group).glob("*.yaml")}, group


def test_run_help_names_every_preset_and_how_to_run_one(tmp_path):
    text = app("steering.run", "--help", cwd=tmp_path).stdout
    assert "steering-run +experiment=NAME" in text
    for preset in (ROOT / "experiments").glob("*.yaml"):
        assert f"\n  {preset.stem} " in text, preset.stem
    approaches = next(ln for ln in text.splitlines() if ln.strip().startswith("+approach"))
    assert {o.strip() for o in approaches.split(None, 1)[1].split(",")} == {
        p.stem for p in (CONF / "approach").glob("*.yaml")
    }


def test_shell_completion_answers_for_the_app(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COMP_LINE": "steering-run method=", "COMP_POINT": "20"}
    cmd = [sys.executable, "-m", "steering.run", "-sc", "query=bash"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(proc.stdout.split()) == {f"method={p.stem}" for p in (CONF / "method").glob("*.yaml")}


@pytest.mark.slow
def test_a_preset_runs_as_a_sweep_without_dash_m(tmp_path, make_feature_arrays, reference_state):
    checkpoint = tmp_path / "ref.pth"
    torch.save({"model": reference_state(), "iteration": 1}, checkpoint)
    features = write_feature_file(tmp_path / "feats.h5", *make_feature_arrays(n=80, frames=32, seed=3))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = app(
        "steering.run",
        "+experiment=strengths",  # no -m
        'hydra.sweeper.params.strength="0,2"',
        "method=bypass",
        f"model.checkpoint={checkpoint}",
        f"data.path={features}",
        f"tracking.uri={uri}",
        f"cache.dir={tmp_path}/cache",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    info = json.loads((tmp_path / "sweep" / "mlflow_parent.json").read_text())
    children = MlflowClient(uri).search_runs([info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}'")
    jobs = [c for c in children if c.data.tags.get("sweep_role") != "confirmation"]  # the preset confirms on test
    assert sorted(float(c.data.params["strength"]) for c in jobs) == [0.0, 2.0]
    assert not (tmp_path / "outputs").exists()  # not a single run
