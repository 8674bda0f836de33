"""Where and how computation runs: device, CPU threads, and mixed precision on GPU (kept only where it
stays within a stated tolerance of fp32)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator

import torch

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16`` on CUDA; a no-op for ``fp32`` or on CPU."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=DTYPES[precision])


def choose_precision(
    device: torch.device,
    requested: str,
    probe: Callable[[], dict[str, torch.Tensor]],
    tolerance: float,
) -> str:
    """The precision to use: ``auto`` tries bf16 on CUDA and keeps it only if ``probe`` (a forward on
    real data returning predictions) stays within ``tolerance`` (max abs) of fp32; fp32 otherwise.
    An explicit ``bf16``/``fp16`` is checked the same way and reported, not silently dropped."""
    if device.type != "cuda" or requested == "fp32":
        return "fp32"
    candidate = "bf16" if requested == "auto" else requested
    reference = probe()
    with autocast(device, candidate):
        mixed = probe()
    error = max(float((mixed[k].float() - reference[k].float()).abs().max()) for k in reference)
    if error <= tolerance:
        log.info("using %s: max |%s - fp32| = %.2e <= %.0e", candidate, candidate, error, tolerance)
        return candidate
    log.warning("%s deviates from fp32 by %.2e > %.0e; using fp32", candidate, error, tolerance)
    return "fp32"


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return values[3] + values[4], sum(values)  # idle + iowait, total


def cpu_busy_fraction(window: float = 0.3) -> float:
    """Share of all cores busy right now (sampled over ``window`` s; load average where /proc is missing).

    Called while this process is idle, so it measures other work on the machine.
    """
    first = _cpu_times()
    if first is None:
        return min(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    time.sleep(window)
    second = _cpu_times()
    total = second[1] - first[1] if second else 0
    return 1.0 - (second[0] - first[0]) / total if total > 0 else 0.0


@contextlib.contextmanager
def cpu_threads(setting: int | str | None) -> Iterator[None]:
    """Run with ``setting`` torch intra-op threads: None keeps torch's default (one per physical
    core); ``auto`` takes 1 thread when other work already keeps the CPU busy."""
    before = torch.get_num_threads()
    if setting == "auto":
        busy = cpu_busy_fraction() > 0.4
        setting = 1 if busy else None
        if busy:
            log.info("the CPU is busy with other work: training with 1 torch thread")
    if setting is not None:
        torch.set_num_threads(int(setting))
    try:
        yield
    finally:
        torch.set_num_threads(before)
