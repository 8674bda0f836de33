"""The one test scaffold: tiny models, reference-layout checkpoints, feature files, composed configs and sweeps.

Test modules take these as fixtures and never import from one another (tests/test_conventions.py checks it).
Factories are session-scoped fixtures that return plain callables, so module-scoped fixtures (a sweep
built once per module) can use them too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
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
# The demo's tiny architecture and recipe (the real demo trains a bigger model for minutes).
TINY_ARCH = {"channels": [4, 8, 8, 16], "embedding_size": 16, "head_hidden": 12, "mel_bins": 64}


def _reference_state(
    channels=TINY_CHANNELS, embedding=TINY_EMBEDDING, hidden=TINY_HIDDEN, flat_lrm=False, seed=0
) -> dict[str, torch.Tensor]:
    """A state_dict written from the reference key list (docs/formats.md, "Checkpoints"), random values."""
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


def _feature_arrays(n=40, frames=32, mel=64, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(-40, 10, size=(n, frames, mel)).astype(np.float32)
    valence = rng.uniform(-1, 1, n).astype(np.float32)
    arousal = rng.uniform(-1, 1, n).astype(np.float32)
    names = [f"clip_{i:04d}.wav" for i in range(n)]
    return feats, valence, arousal, names


def _compose(*overrides: str, app: str = "run", hydra: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=app, overrides=list(overrides), return_hydra_config=hydra)


# --------------------------------------------------------------------------- factories (plain callables)
@pytest.fixture(scope="session")
def reference_state():
    """``reference_state(channels=..., flat_lrm=False, seed=0)``: a random state_dict in the reference layout."""
    return _reference_state


@pytest.fixture(scope="session")
def tiny_channels() -> tuple[int, ...]:
    """The conv widths of every tiny model here."""
    return TINY_CHANNELS


@pytest.fixture(scope="session")
def make_feature_arrays():
    """``make_feature_arrays(n=40, frames=32, mel=64, seed=0)`` -> (features, valence, arousal, names)."""
    return _feature_arrays


@pytest.fixture(scope="session")
def compose_config():
    """``compose_config(*overrides, app="run", hydra=False)``: an app's config composed from this checkout's conf/."""
    return _compose


@pytest.fixture(scope="session")
def tiny_arch():
    """The demo's model section (``model.arch``) at test size."""
    from steering.config.schema import ArchConf

    return ArchConf(**TINY_ARCH)


@pytest.fixture(scope="session")
def tiny_demo():
    """``tiny_demo(tmp_path, **train)``: a demo section that builds in seconds (30 clips, one epoch)."""

    from steering.config.schema import DemoConf, FrontendConf, SyntheticConf, TrainConf

    def make(tmp_path, **train) -> DemoConf:
        return DemoConf(
            cache_dir=str(tmp_path / "from_config"),
            workers=1,
            progress=False,
            synthetic=SyntheticConf(n_clips=30, duration=0.7, seed=0),
            frontend=FrontendConf(frames=64),
            train=TrainConf(epochs=1, batch_size=8, num_threads=1, device="cpu", **train),
        )

    return make


@pytest.fixture(scope="session")
def run_sweep():
    """``run_sweep(assets, name, *overrides, timeout=400, uri=None)``: ``python -m steering.run -m ...`` on the
    tiny assets in a subprocess; returns (process, sweep dir, tracking uri)."""

    def run(
        assets, name: str, *overrides: str, timeout: int = 400, uri: str | None = None
    ) -> tuple[subprocess.CompletedProcess, Path, str]:
        tmp = assets["tmp"]
        uri = uri or f"sqlite:///{tmp}/{name}.db"
        sweep_dir = tmp / name
        cmd = [
            sys.executable,
            "-m",
            "steering.run",
            "-m",
            *overrides,
            f"model.checkpoint={assets['checkpoint']}",
            f"data.path={assets['features']}",
            f"tracking.uri={uri}",
            f"cache.dir={tmp}/cache",
            "binning.min_samples=3",
            "metrics.bootstrap_resamples=100",
            f"hydra.sweep.dir={sweep_dir}",
        ]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp)
        return proc, sweep_dir, uri

    return run


@pytest.fixture(scope="session")
def parent_and_children():
    """``parent_and_children(uri, sweep_dir)`` -> (client, mlflow_parent.json, parent run, child runs)."""

    def find(uri: str, sweep_dir: Path):
        from mlflow.tracking import MlflowClient

        info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
        client = MlflowClient(uri)
        parent = client.get_run(info["run_id"])
        children = client.search_runs([info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}'")
        return client, info, parent, children

    return find


# --------------------------------------------------------------------------- inputs on disk
@pytest.fixture
def ref_checkpoint(tmp_path):
    """Path of a tiny reference-layout checkpoint (nested LRM, with the usual extra keys)."""
    path = tmp_path / "ref.pth"
    torch.save({"model": _reference_state(), "iteration": 10, "best_val_pearson": 0.5, "optimizer": {}}, path)
    return path


@pytest.fixture
def tiny_model(ref_checkpoint):
    from steering import load_model

    return load_model(ref_checkpoint)


@pytest.fixture
def feature_file(tmp_path):
    from steering.data import write_feature_file

    return write_feature_file(tmp_path / "features.h5", *_feature_arrays())


@pytest.fixture
def assets(tmp_path, ref_checkpoint) -> dict:
    """A tiny run of this test's own: checkpoint and a 120-clip feature file in ``tmp_path``.

    Modules whose tests share one set of inputs override ``assets`` with a module-scoped fixture
    that returns ``sweep_assets``."""
    from steering.data import write_feature_file

    features = write_feature_file(tmp_path / "feats.h5", *_feature_arrays(n=120, frames=32, seed=5))
    return {"checkpoint": ref_checkpoint, "features": features, "tmp": tmp_path}


@pytest.fixture(scope="module")
def sweep_assets(request, tmp_path_factory) -> dict:
    """A tiny checkpoint and a 120-clip feature file built once per test module, for subprocess sweeps."""
    from steering.data import write_feature_file

    tmp = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    checkpoint = tmp / "ref.pth"
    torch.save({"model": _reference_state(), "iteration": 10}, checkpoint)
    features = write_feature_file(tmp / "feats.h5", *_feature_arrays(n=120, frames=32, seed=5))
    return {"checkpoint": checkpoint, "features": features, "tmp": tmp}


@pytest.fixture
def compose_run(assets):
    """``compose_run(*overrides)``: the typed run config on ``assets`` (tracking, caches and demo under its tmp),
    as the app hands it to the library."""
    from omegaconf import OmegaConf

    def compose(*overrides: str):
        tmp = assets["tmp"]
        base = [
            f"model.checkpoint={assets['checkpoint']}",
            f"data.path={assets['features']}",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"cache.dir={tmp}/cache",
            f"demo.cache_dir={tmp}/demo",
            "binning.min_samples=3",
            "metrics.bootstrap_resamples=200",
            "batch_size=16",
        ]
        return OmegaConf.to_object(_compose(*base, *overrides))

    return compose


# --------------------------------------------------------------------------- a SLURM cluster
SLURM_PROGRAMS = ("slurmctld", "slurmd", "sbatch", "munged", "slurmdbd", "mariadbd")


@dataclass
class SlurmCluster:
    """The single-node cluster of ``scripts/slurm/start.sh``: ``env`` for client commands and sweeps,
    ``accounting`` whether ``sacct`` answers now; ``start(accounting=...)`` switches (restarts slurmctld)."""

    env: dict
    accounting: bool = True

    def start(self, accounting: bool = True) -> None:
        env = {**self.env, "STEERING_SLURM_ACCOUNTING": "1" if accounting else "0"}
        proc = subprocess.run(
            [str(ROOT / "scripts/slurm/start.sh")], env=env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            pytest.fail(f"scripts/slurm/start.sh failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        self.accounting = accounting


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node SLURM cluster with job accounting, started once (scripts/slurm/start.sh) and stopped at
    the end if this session started it. Skips where it cannot run: SLURM's packages missing, or not root."""
    missing = [p for p in SLURM_PROGRAMS if not shutil.which(p) and not os.path.exists(f"/usr/sbin/{p}")]
    if missing:
        pytest.skip(f"SLURM packages not installed (no {', '.join(missing)}; .ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("starting the SLURM daemons (scripts/slurm/start.sh) needs root")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT), "SLURM_PARTITION": "debug"}
    was_up = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    cluster = SlurmCluster(env)
    cluster.start(accounting=True)
    yield cluster
    if not was_up:
        subprocess.run([str(ROOT / "scripts/slurm/stop.sh")], capture_output=True, timeout=300)
    elif not cluster.accounting:
        cluster.start(accounting=True)  # as it was found


# --------------------------------------------------------------------------- hostile inputs (fault matrix)
class WritesAFile:
    """A pickle payload: unpickling it would create ``path`` (a file that ran no code of ours)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="session")
def writes_a_file():
    """The class of a pickle payload that creates a file when unpickled (checkpoints must never run it)."""
    return WritesAFile


@pytest.fixture(scope="module")
def fault_inputs(tmp_path_factory, make_feature_arrays, reference_state):
    """A valid reference-size checkpoint (numpy values as old checkpoints hold them) and feature file, and
    ``config(tmp, *overrides)``: a run's typed config on them, storing everything under ``tmp``."""
    from omegaconf import OmegaConf

    from steering.data import write_feature_file

    tmp = tmp_path_factory.mktemp("faults")
    checkpoint = tmp / "ref.pth"
    torch.save({"model": reference_state(), "best_val_pearson": np.float64(0.5), "iteration": np.int64(3)}, checkpoint)
    features = write_feature_file(tmp / "feats.h5", *make_feature_arrays(n=120, frames=32, seed=5))

    def config(run_tmp: Path, *overrides: str):
        base = [
            f"model.checkpoint={checkpoint}",
            f"data.path={features}",
            f"tracking.uri=sqlite:///{run_tmp}/mlflow.db",
            f"cache.dir={run_tmp}/cache",
            f"demo.cache_dir={run_tmp}/demo",
            "binning.min_samples=3",
            "metrics.bootstrap_resamples=100",
        ]
        return OmegaConf.to_object(_compose(*base, *overrides))

    return {"tmp": tmp, "checkpoint": checkpoint, "features": features, "config": config}


# --------------------------------------------------------------------------- isolation
@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine: more torch threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
