"""Sibling reuse in sweeps: every job logs the predictions of its own configuration (issue 9, defect 1)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from steering.engine.reuse import SweepReuse, reuse_key
from steering.tracking import job as runner

CONF = str(Path(__file__).resolve().parents[1] / "conf")
STEERED = ["steered_valence", "steered_arousal"]
RTOL = 5e-4


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


def _strength(overrides: tuple[str, ...]) -> str:
    return next(o for o in overrides if o.startswith("strength="))


def _standalone(assets, overrides: list[str], tmp) -> pd.DataFrame:
    """The same configuration run on its own (no sweep, no reuse), as ``python -m steering.run`` does."""
    base = [
        f"model.checkpoint={assets['checkpoint']}",
        f"data.path={assets['features']}",
        f"tracking.uri=sqlite:///{tmp}/alone.db",
        f"cache.dir={tmp}/alone-cache",
        f"demo.cache_dir={tmp}/demo",
        "binning.min_samples=3",
        "metrics.bootstrap_resamples=100",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="run", overrides=[*base, *overrides]))
    return runner.evaluate(cfg).predictions


def _job_predictions(client, children, tmp) -> dict[tuple[str, ...], pd.DataFrame]:
    out = {}
    for child in children:
        assert child.info.status == "FINISHED"
        overrides = tuple(json.loads(child.data.tags["sweep_overrides"]))
        path = client.download_artifacts(child.info.run_id, "predictions.csv", str(tmp))
        out[overrides] = pd.read_csv(path, keep_default_na=False)
    return out


@pytest.mark.parametrize(
    "sweep",
    [
        ["method=bypass,direct", "priming=false,true", "alpha=0.5,1", "strength=1,2"],
        ["category=oracle,shuffled,random,predicted", "layer=conv3,conv4", "strength=1,2"],
        [
            # not pathway=dual: bypass on every block of both pathways drives this random-weight model
            # ~10^9 widths off its ratings, a run refused as implausible (docs/reliability.md)
            "method=bypass",
            "pathway=valence,arousal",
            "layer=all",
            "binning=9bin,25bin",
            "signals.split=train,all",
            "strength=1,2",
        ],
    ],
    ids=["priming-alpha-method", "category-layer", "pathway-binning-signals"],
)
def test_every_sweep_job_logs_the_predictions_of_its_own_configuration(
    assets, sweep, tmp_path, run_sweep, parent_and_children
):
    name = "reuse-" + "-".join(s.split("=")[0].replace(".", "") for s in sweep)
    proc, sweep_dir, uri = run_sweep(assets, name, *sweep, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, _, _, children = parent_and_children(uri, sweep_dir)
    jobs = _job_predictions(client, children, tmp_path)
    n_jobs = int(np.prod([len(s.split("=")[1].split(",")) for s in sweep]))
    assert len(jobs) == n_jobs
    assert "reused from a sibling job" in proc.stdout + proc.stderr  # siblings really were served from the reuse object
    for overrides, logged in jobs.items():
        alone = _standalone(assets, list(overrides), tmp_path)
        assert list(logged["audio_name"]) == list(alone["audio_name"])
        assert list(logged.columns) == list(alone.columns)
        assert list(logged["signal"]) == list(alone["signal"].astype(str)), overrides
        steered_cols = [c for c in logged.columns if c.startswith("steered_")]
        # Sibling strengths run in one batched forward: equal up to float32 rounding of the batch shape.
        np.testing.assert_allclose(
            logged[steered_cols].to_numpy(float),
            alone[steered_cols].to_numpy(float),
            rtol=RTOL,
            atol=1e-6,
            err_msg=str(overrides),
        )
    # The check can see a swap: jobs of the same strength that differ in a field differ in their predictions.
    for (a, pa), (b, pb) in itertools.combinations(jobs.items(), 2):
        if _strength(a) == _strength(b):
            x, y = pa[STEERED].to_numpy(float), pb[STEERED].to_numpy(float)
            assert np.max(np.abs(x - y) / (np.abs(y) + 1e-3)) > 10 * RTOL, (a, b)


PLACES = ["cache.dir=/c", "demo.cache_dir=/c", "tracking.uri=sqlite:////tmp/unused.db"]


def test_reuse_key_covers_every_field_but_strength():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):

        def typed(*overrides: str):
            return OmegaConf.to_object(compose(config_name="run", overrides=[*PLACES, *overrides]))

        base = typed()
        variants = [
            typed(o)
            for o in (
                "priming=true",
                "alpha=0.5",
                "method=bypass",
                "category=shuffled",
                "layer=conv3",
                "pathway=dual",
                "binning=25bin",
                "signals.split=val",
                "seed=1",
                "data.train_fraction=0.6",
            )
        ]
        other_strength = typed("strength=3")
        other_cache = typed("cache.dir=/elsewhere", "threads=1")
    key = reuse_key(base, "m", "d")
    assert reuse_key(other_strength, "m", "d") == key and reuse_key(other_cache, "m", "d") == key
    assert len({reuse_key(v, "m", "d") for v in variants} | {key}) == len(variants) + 1
    assert reuse_key(base, "m2", "d") != key  # inputs are part of the key too


def test_reuse_object_is_per_sweep(tmp_path):
    from steering.sweep import context as run

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "multirun.yaml").write_text("hydra: {overrides: {task: ['strength=1,2']}}\n")
    first = run.sweep_reuse(tmp_path / "a")
    assert first.strengths == (1.0, 2.0) and run.sweep_reuse(tmp_path / "a") is first
    first.put("k", {1.0: {"valence": np.zeros((1, 2))}})
    assert run.sweep_reuse(tmp_path / "b") is not first  # another sweep starts empty
    assert run.sweep_reuse(None) is None  # a standalone run gets none
    assert len(run.sweep_reuse(tmp_path / "a")) == 0  # the old sweep's results are gone
    assert isinstance(first, SweepReuse)


def test_a_sweep_loads_its_model_once_per_checkpoint_device_and_trust():
    reuse = SweepReuse()
    loads = []

    def load():
        loads.append(1)
        return object()

    first = reuse.model(("checkpoint-hash", "cpu", False), load)
    assert reuse.model(("checkpoint-hash", "cpu", False), load) is first
    assert len(loads) == 1
    assert reuse.model(("checkpoint-hash", "cpu", True), load) is not first
    assert reuse.model(("other-hash", "cpu", False), load) is not first
    assert len(loads) == 3
