"""Precision and thread settings."""

from __future__ import annotations

import torch

from steering.engine.hardware import choose_precision, cpu_threads


def test_cpu_always_runs_fp32_without_probing():
    def probe():
        raise AssertionError("no probe on CPU")

    assert choose_precision(torch.device("cpu"), "auto", probe, 1e-3) == "fp32"
    assert choose_precision(torch.device("cpu"), "bf16", probe, 1e-3) == "fp32"


def test_cpu_threads_is_restored():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before
