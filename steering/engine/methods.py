"""Steering methods: where the strength s enters the ModBlock, one registered function per method.

A method is a function ``(block, source, strength, *, trace=None) -> modulation`` registered under
the name that ``method=<name>`` selects (``conf/method/<name>.yaml``). ``source`` is (N, 128),
``strength`` (N,) in the source's dtype, and the result is the ModBlock's modulation m (N, C, 1, 1):
the steered block's gain is ``1 + m``. ``trace`` (a dict or None) must be passed on to the block's
call (``block(..., trace=trace)``) so that the intervention ledger sees each stage of the ModBlock;
:func:`method_modulation` adds the method's final modulation as ``trace["modulation"]``. Adding a
method is one registered function here and one YAML file; ``tests/test_config.py`` checks that the
two lists agree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from steering.model.lrm import ModBlock

#: ``(block, source, strength, *, trace=None) -> modulation``
Method = Callable[..., "torch.Tensor"]
#: Where :func:`method_modulation` records a method's final modulation in a trace.
FINAL_STAGE = "modulation"
#: Stage name -> (N, width) tensor, or None for a stage the method switches off (steering.model.lrm.TRACE_STAGES).
Trace = dict[str, Any]

_REGISTRY: dict[str, Method] = {}
#: Every registered method by name (read-only view; register with :func:`register_method`).
METHODS = MappingProxyType(_REGISTRY)


def register_method(name: str) -> Callable[[Method], Method]:
    """Register ``fn`` as the steering method ``name`` (a decorator); a name is registered once."""

    def register(fn: Method) -> Method:
        if name in _REGISTRY:
            raise ValueError(f"steering method {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return register


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_REGISTRY)


@register_method("lrm")
def lrm(block: ModBlock, source: torch.Tensor, s: torch.Tensor, *, trace: Trace | None = None) -> torch.Tensor:
    """s*v through the full ModBlock (normalisation cancels s for every s > 0)."""
    return block(source * s[:, None], trace=trace)


@register_method("bypass")
def bypass(block: ModBlock, source: torch.Tensor, s: torch.Tensor, *, trace: Trace | None = None) -> torch.Tensor:
    """s*v through the ModBlock with normalisation and tanh switched off: the signal's size matters."""
    return block(source * s[:, None], normalize=False, squash=False, trace=trace)


@register_method("modulation")
def modulation(block: ModBlock, source: torch.Tensor, s: torch.Tensor, *, trace: Trace | None = None) -> torch.Tensor:
    """v through the full ModBlock with both learned gains (neg_scale, pos_scale) multiplied by s."""
    return block(source, gain_multiplier=s, trace=trace)


@register_method("direct")
def direct(block: ModBlock, source: torch.Tensor, s: torch.Tensor, *, trace: Trace | None = None) -> torch.Tensor:
    """s*m of the full ModBlock, so the gain is 1 + s*m (s = 0: unmodulated)."""
    return block(source, trace=trace) * s.view(-1, 1, 1, 1)


def method_modulation(
    block: ModBlock, source: torch.Tensor, method: str, strength: torch.Tensor, trace: Trace | None = None
) -> torch.Tensor:
    """Modulation m (N, C, 1, 1) of ``block`` for ``source`` (N, 128) and per-row ``strength`` (N,).

    ``trace`` (a dict) receives the ModBlock's stages and, as ``"modulation"``, the method's final m
    (only the latter for a method registered without a ``trace`` keyword).
    """
    try:
        fn = _REGISTRY[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(_REGISTRY)}") from None
    if trace is None:
        return fn(block, source, strength.to(source.dtype))
    if "trace" in inspect.signature(fn).parameters:
        out = fn(block, source, strength.to(source.dtype), trace=trace)
    else:
        out = fn(block, source, strength.to(source.dtype))
    trace[FINAL_STAGE] = out.flatten(1)
    return out
