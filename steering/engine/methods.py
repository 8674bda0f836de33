"""Where the strength s enters the ModBlock, one meaning per method (README, "Options")."""

from __future__ import annotations

import torch

from steering.model.lrm import ModBlock


def method_modulation(block: ModBlock, source: torch.Tensor, method: str, strength: torch.Tensor) -> torch.Tensor:
    """Modulation m (N, C, 1, 1) of ``block`` for ``source`` (N, 128) and per-row ``strength`` (N,).

    - ``lrm``: s*v through the full ModBlock (normalisation cancels s for every s > 0).
    - ``bypass``: s*v through the ModBlock with normalisation and tanh switched off.
    - ``modulation``: v through the full ModBlock with neg_scale and pos_scale multiplied by s.
    - ``direct``: s*m of the full ModBlock, so the gain is 1 + s*m (s = 0: unmodulated).
    """
    s = strength.to(source.dtype)
    if method == "lrm":
        return block(source * s[:, None])
    if method == "bypass":
        return block(source * s[:, None], normalize=False, squash=False)
    if method == "modulation":
        return block(source, gain_multiplier=s)
    if method == "direct":
        return block(source) * s.view(-1, 1, 1, 1)
    raise ValueError(f"unknown method {method!r}")
