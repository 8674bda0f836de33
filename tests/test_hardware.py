"""Precision and thread settings."""

from __future__ import annotations

import pytest
import torch

from steering.util.hardware import choose_precision, cpu_threads


def test_cpu_always_runs_fp32_without_probing():
    def probe():
        raise AssertionError("no probe on CPU")

    assert choose_precision(torch.device("cpu"), "auto", probe, 1e-3) == "fp32"
    assert choose_precision(torch.device("cpu"), "bf16", probe, 1e-3) == "fp32"


def test_cpu_threads_is_restored():
    # The autouse fixture runs every test on 1 thread: ask for another count so the change is real.
    before = torch.get_num_threads()
    wanted = before + 1
    with cpu_threads(wanted):
        assert torch.get_num_threads() == wanted != before
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_cpu_threads_is_restored_when_the_body_raises():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), cpu_threads(before + 1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
