"""Steering methods: where the strength s enters the ModBlock, one registered function per method.

A method is a function ``(block, source, strength) -> modulation`` registered under the name that
``method=<name>`` selects (``conf/method/<name>.yaml``). ``source`` is (N, 128), ``strength`` (N,)
in the source's dtype, and the result is the ModBlock's modulation m (N, C, 1, 1): the steered
block's gain is ``1 + m``. Adding a method is one registered function here and one YAML file;
``tests/test_config.py`` checks that the two lists agree.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from steering.model.lrm import ModBlock

Method = Callable[["ModBlock", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]

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
def lrm(block: ModBlock, source: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """s*v through the full ModBlock (normalisation cancels s for every s > 0)."""
    return block(source * s[:, None])


@register_method("bypass")
def bypass(block: ModBlock, source: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """s*v through the ModBlock with normalisation and tanh switched off: the signal's size matters."""
    return block(source * s[:, None], normalize=False, squash=False)


@register_method("modulation")
def modulation(block: ModBlock, source: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """v through the full ModBlock with both learned gains (neg_scale, pos_scale) multiplied by s."""
    return block(source, gain_multiplier=s)


@register_method("direct")
def direct(block: ModBlock, source: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """s*m of the full ModBlock, so the gain is 1 + s*m (s = 0: unmodulated)."""
    return block(source) * s.view(-1, 1, 1, 1)


def method_modulation(block: ModBlock, source: torch.Tensor, method: str, strength: torch.Tensor) -> torch.Tensor:
    """Modulation m (N, C, 1, 1) of ``block`` for ``source`` (N, 128) and per-row ``strength`` (N,)."""
    try:
        fn = _REGISTRY[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(_REGISTRY)}") from None
    return fn(block, source, strength.to(source.dtype))
