"""Sweep reuse: sibling strengths share one batched forward; shared work is cached on disk."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from steering.engine import chunked
from steering.engine.reuse import SweepReuse
from steering.sweep.siblings import sweep_strengths
from steering.tracking import job as runner


def _write_multirun(path, task, params=None):
    cfg = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params or {}}}}
    path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), path / "multirun.yaml")


def test_sweep_strengths_reads_overrides_and_sweeper_params(tmp_path):
    _write_multirun(tmp_path / "a", ["method=bypass", "strength=0,0.5,2"])
    assert sweep_strengths(tmp_path / "a") == [0.0, 0.5, 2.0]
    _write_multirun(tmp_path / "b", ["+experiment=strengths"], {"strength": "range(0,3)"})
    assert sweep_strengths(tmp_path / "b") == [0.0, 1.0, 2.0]
    assert sweep_strengths(tmp_path / "missing") == []
    assert sweep_strengths(None) == []


def test_sibling_strengths_share_one_forward_and_match_single_runs(assets, monkeypatch, tmp_path, compose_run):
    sweep_dir = tmp_path / "sweep"
    _write_multirun(sweep_dir, ["strength=0,1,3"])
    calls = []
    real = chunked.steer_from_shared

    def counting(*args, **kwargs):
        calls.append(args[-1].numel())
        return real(*args, **kwargs)

    monkeypatch.setattr(chunked, "steer_from_shared", counting)
    reuse = SweepReuse(sweep_strengths(sweep_dir))  # as the app creates it per sweep
    swept = {
        s: runner.evaluate(compose_run("method=bypass", f"strength={s}"), sweep_dir=sweep_dir, reuse=reuse)
        for s in (0, 1, 3)
    }
    n_chunks = len(calls)
    assert n_chunks > 0 and all(c == 3 for c in calls)  # one pass over the chunks, 3 strengths each
    assert reuse.hits == 2 and len(reuse) == 1
    calls.clear()
    single = runner.evaluate(compose_run("method=bypass", "strength=3"))
    assert all(c == 1 for c in calls)
    np.testing.assert_allclose(
        swept[3].predictions.steered_valence, single.predictions.steered_valence, rtol=1e-4, atol=1e-5
    )
    assert swept[0].metrics["dr_valence"] != pytest.approx(swept[3].metrics["dr_valence"])


def test_shared_work_is_read_back_from_the_disk_cache(assets, monkeypatch, compose_run):
    first = runner.evaluate(compose_run("method=direct", "strength=2"))

    def fail(*_a, **_k):
        raise AssertionError("shared work recomputed despite the disk cache")

    monkeypatch.setattr(chunked, "shared_pass", fail)
    again = runner.evaluate(compose_run("method=direct", "strength=2"))
    np.testing.assert_array_equal(first.predictions.steered_valence, again.predictions.steered_valence)
    np.testing.assert_array_equal(first.predictions.base_arousal, again.predictions.base_arousal)
