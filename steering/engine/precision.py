"""Mixed precision on GPU, kept only where it stays within a stated tolerance of fp32."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (None: torch's default, one per physical core)."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
