"""What a run records about its inputs: the code's commit and the exact signal samples (issue 9)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import mlflow
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from steering.data import FeatureFile, split_indices
from steering.tracking.job import evaluate
from steering.tracking.runs import config_yaml, git_commit
from steering.util.hashing import ADDED_DEFAULTS, config_hash, flatten, plain

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


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


PLACES = ["cache.dir=/c", "demo.cache_dir=/d", "tracking.uri=sqlite:////tmp/unused.db"]
HASHED_VARIANTS = [
    [],
    ["method=bypass", "strength=2", "category=random", "category.draws=3"],
    ["category=fixed", "category.target=positive_strong", "priming=true", "alpha=0.5", "binning.min_samples=3"],
    ["pathway=dual", "layer=all", "binning=25bin", "signals.path=/s.json", "threads=2", "confirm=true", "resume=true"],
    ["model=reference", "model.checkpoint=/m.pth", "data.path=/f.h5", "data.split=legacy", "data.eval_split=val"],
]


def _dict_config_digest(cfg, *content_hashes: str) -> str:
    """The config hash as computed from the composed (untyped) config before the typed objects existed."""

    def flat(mapping: Mapping, prefix: str = "") -> dict:
        out: dict = {}
        for key, value in mapping.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
        return out

    volatile = ("tracking", "cache", "demo.cache_dir", "demo.workers", "demo.progress", "resume", "threads", "device")
    dropped = (*volatile, "confirm")
    resolved = flat(OmegaConf.to_container(cfg, resolve=True))
    # Keys the config gained since, at their defaults, were not in the config then.
    gained = {k for k, v in ADDED_DEFAULTS.items() if resolved.get(k) == v}
    kept = {
        k: v
        for k, v in resolved.items()
        if k not in gained and not any(k == d or k.startswith(d + ".") for d in dropped)
    }
    payload = json.dumps([kept, list(content_hashes)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@pytest.mark.parametrize("overrides", HASHED_VARIANTS, ids=lambda o: " ".join(o) or "defaults")
def test_typed_config_records_what_the_composed_config_recorded(overrides):
    """resume=true finds earlier runs by config hash: the typed config must hash, log and save as before."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        composed = compose(config_name="run", overrides=[*PLACES, *overrides])
    typed = OmegaConf.to_object(composed)
    assert config_hash(typed, "m", "d") == _dict_config_digest(composed, "m", "d")
    assert config_hash(typed, "m", "d") != config_hash(typed, "m", "other")
    assert config_yaml(typed) == OmegaConf.to_yaml(composed, resolve=True)
    assert flatten(plain(typed)) == flatten(OmegaConf.to_container(composed, resolve=True))


def test_the_evaluation_and_the_hashes_import_neither_mlflow_nor_hydra():
    code = (
        "import sys, steering.evaluation, steering.engine.reuse, steering.util.hashing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'hydra', 'omegaconf')))"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_keys_the_config_gained_leave_earlier_hashes_alone(compose_run):
    """A run recorded before a key existed (no such key in its config) keeps its hash at the key's default."""
    typed = compose_run("method=bypass")
    older = plain(typed)
    for dotted in ADDED_DEFAULTS:
        *parents, leaf = dotted.split(".")
        section = older
        for key in parents:
            section = section[key]
        del section[leaf]  # the config as it was composed before the key existed
    assert config_hash(typed, "m", "d") == config_hash(older, "m", "d")
    moved = compose_run("method=bypass", "demo.train.weight_decay=0.1")
    assert config_hash(moved, "m", "d") != config_hash(typed, "m", "d")  # set away from it, a key counts


def test_params_describe_the_loaded_checkpoint_not_the_composed_demo_architecture(assets, compose_run, tiny_model):
    """A reference-format checkpoint without ``model=``: ``model.arch.*`` params come from the file (issue 17)."""
    cfg = compose_run("method=bypass", "strength=1.0")  # model group: the demo's architecture
    loaded = tiny_model.config
    assert list(cfg.model.arch.channels) != list(loaded.channels)  # the case that used to mislead
    result = evaluate(cfg)
    run = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db").get_run(result.run_id)
    params = run.data.params
    assert json.loads(params["model.arch.channels"]) == list(loaded.channels)
    assert int(params["model.arch.embedding_size"]) == loaded.embedding_size
    assert int(params["model.arch.head_hidden"]) == loaded.head_hidden
    assert params["model.arch.connections"] == str([[c.pathway, c.layer] for c in loaded.connections])
    # what ran is still found by the composed config: config.yaml and the config hash are unchanged
    assert run.data.tags["config_hash"] == config_hash(cfg, result.tags["checkpoint_hash"], result.tags["data_hash"])


def test_random_draws_barely_move_when_the_activations_move_by_rounding():
    """``category=random`` draws from a covariance whose eigenvalues are all equal (eigenvectors
    undefined: ``eigh`` turned a 1e-7 change into draws differing by 146 %): the same seed gives
    the same draws up to the size of the perturbation (issue 17)."""
    from scipy.linalg import hadamard

    from steering.engine.categories import GaussianReference

    units = hadamard(32)[:, 1:17].astype(np.float64)  # orthogonal zero-mean columns: covariance = c * I
    acts = 1.0 + 0.5 * np.vstack([units, units])
    moved = acts * (1 + 1e-7 * np.random.default_rng(0).standard_normal(acts.shape))

    def draws(a: np.ndarray) -> np.ndarray:
        reference = GaussianReference.from_activations({"valence": a, "arousal": a})
        return reference.sample(200, np.random.default_rng(5))["valence"].astype(np.float64)

    before, after = draws(acts), draws(moved)
    assert np.abs(before).max() > 0.5
    assert np.abs(after - before).max() < 1e-5 * np.abs(before).max()


def test_a_random_control_keeps_every_draw_with_its_run(assets, compose_run):
    result = evaluate(compose_run("method=bypass", "strength=2", "category=random", "category.draws=2"))
    client = mlflow.tracking.MlflowClient(f"sqlite:///{assets['tmp']}/mlflow.db")
    path = client.download_artifacts(result.run_id, "random_draws.npz", str(assets["tmp"] / "draws"))
    with np.load(path) as saved:
        assert list(saved["audio_name"]) == list(result.predictions["audio_name"])
        n = len(result.predictions)
        for p in ("valence", "arousal"):
            vectors = saved[p]
            assert vectors.shape[:2] == (2, n) and (vectors >= 0).all()
            assert not np.array_equal(vectors[0], vectors[1])  # two draws, not one stored twice
        assert saved["mask"].shape == (2, n) and saved["mask"].all()
    fixed = evaluate(compose_run("method=bypass", "strength=2"))
    assert "random_draws.npz" not in {a.path for a in client.list_artifacts(fixed.run_id)}


def _priming_inputs(batch: int = 4):
    import torch

    g = torch.Generator().manual_seed(11)
    x = torch.randn(batch, 32, 64, generator=g) * 5 - 30
    signals = {p: torch.rand(batch, 128, generator=g) for p in ("valence", "arousal")}
    mask = torch.tensor([True, False, True, True][:batch])
    return x, signals, mask


@pytest.mark.parametrize("method", ["bypass", "modulation", "direct"])
def test_priming_changes_nothing_when_every_connection_is_steered_with_alpha_one(tiny_model, method):
    """docs/model.md, "Priming": pass 1 then only feeds the sources that α = 1 ignores."""
    from steering.engine import SteeringSpec, select_connections, steer_direct

    x, signals, mask = _priming_inputs()
    every = select_connections(tiny_model.connections, "dual", "all")
    plain_run = steer_direct(tiny_model, x, SteeringSpec(every, method=method, strength=2.0), signals, mask)
    primed = steer_direct(tiny_model, x, SteeringSpec(every, method=method, strength=2.0, priming=True), signals, mask)
    for t in ("valence", "arousal"):
        assert (plain_run[t] - primed[t]).abs().max().item() < 1e-6
    one = select_connections(tiny_model.connections, "valence", "conv4")
    partial = steer_direct(tiny_model, x, SteeringSpec(one, method=method, strength=2.0, priming=True), signals, mask)
    unprimed = steer_direct(tiny_model, x, SteeringSpec(one, method=method, strength=2.0), signals, mask)
    assert (partial["valence"] - unprimed["valence"]).abs().max().item() > 1e-5  # with unsteered connections it acts


def test_priming_with_alpha_below_one_steers_pass_one_with_alpha_times_the_signal(tiny_model):
    """docs/model.md, "Priming": pass 1 has no activation of its own, so its blend is α·signal + (1 − α)·0."""
    import dataclasses

    import torch

    from steering.engine import SteeringSpec, select_connections, steer_direct
    from steering.engine.core import steered_modulations

    x, signals, mask = _priming_inputs()
    one = select_connections(tiny_model.connections, "valence", "conv4")
    spec = SteeringSpec(one, method="bypass", strength=2.0, alpha=0.4, priming=True)
    got = steer_direct(tiny_model, x, spec, signals, mask)
    # the documented meaning, written out: pass 1 steered by 0.4 * signal (blend with zero), unselected unmodulated
    strength = torch.full((4,), 2.0)
    zeros = {p: torch.zeros(4, 128) for p in signals}
    blank = {c: torch.zeros(1) for c in one}
    scaled = {p: 0.4 * s for p, s in signals.items()}
    with torch.inference_mode():
        pass1 = steered_modulations(
            tiny_model, dataclasses.replace(spec, alpha=1.0), zeros, blank, scaled, mask, strength
        )
        first = tiny_model.feedforward(x, tiny_model.gains_from(pass1))
        sources = {p: first[f"{p}_128d"] for p in signals}
        mods = steered_modulations(tiny_model, spec, sources, tiny_model.modulations(first), signals, mask, strength)
        expected = tiny_model.feedforward(x, tiny_model.gains_from(mods))
    for t in ("valence", "arousal"):
        assert (got[t] - expected[t].view(-1)).abs().max().item() < 1e-6
    full = steer_direct(tiny_model, x, dataclasses.replace(spec, alpha=1.0), signals, mask)
    assert (got["valence"] - full["valence"]).abs().max().item() > 1e-5  # α does act
