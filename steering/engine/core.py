"""Steered forward passes, all through the model's one forward path (``LRMEmotionNet.single_pass``).

Feedback acts on a block's *output* (gain, then ReLU), so for a configuration whose earliest
steered block is k, everything up to block k's unmodified pass-2 output is the same for every
strength, method, signal and blend: pass 1, the model's own modulations, the baseline and that
output (the "prefix"). :func:`shared_pass` computes them once; :func:`steer_from_shared` resumes
the pass at block k with the steered gains, for several strengths in one batched forward
(:func:`steered_from_shared` is the same without inference mode, for fitting signals).
:func:`steer_direct` is the straightforward reference (whole passes): both run the same
operations on the same values, which the tests and ``benchmarks/sweep.py`` check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from steering.engine.methods import method_modulation
from steering.engine.spec import SteeringSpec
from steering.model.lrm import PATHWAYS, Connection
from steering.model.network import LRMEmotionNet
from steering.vocab import TARGETS


@dataclass
class SharedPass:
    """Configuration-independent results for one batch (all tensors on one device)."""

    first: dict[str, torch.Tensor]  # pass-1 valence/arousal (B,1) and *_128d (B,128)
    baseline: dict[str, torch.Tensor]  # the model's own prediction (pass 2): valence/arousal (B,1)
    own_modulations: dict[Connection, torch.Tensor]  # (B,C,1,1) from pass-1 activations
    start_block: int  # 0-based block whose raw pass-2 output is ``prefix``
    prefix: torch.Tensor  # raw (pre-gain) pass-2 output of ``start_block``, or its pooled (B, C) form
    pooled: bool = False  # True when ``start_block`` is the last block: ``prefix`` is pool(raw output)

    def _map(self, fn) -> SharedPass:
        return SharedPass(
            first={k: fn(v) for k, v in self.first.items()},
            baseline={k: fn(v) for k, v in self.baseline.items()},
            own_modulations={k: fn(v) for k, v in self.own_modulations.items()},
            start_block=self.start_block,
            prefix=fn(self.prefix),
            pooled=self.pooled,
        )

    def to(self, device: torch.device | str) -> SharedPass:
        return self._map(lambda t: t.to(device))

    def clone(self) -> SharedPass:
        """Ordinary copies of the tensors: usable in autograd, unlike those made in inference mode."""
        return self._map(torch.Tensor.clone)

    def rows(self, rows: slice) -> SharedPass:
        """The same results for a slice of the batch."""
        return self._map(lambda t: t[rows])

    @classmethod
    def concat(cls, parts: list[SharedPass]) -> SharedPass:
        """Join the results of consecutive batches."""
        head = parts[0]
        if len(parts) == 1:
            return head
        return cls(
            first={k: torch.cat([p.first[k] for p in parts]) for k in head.first},
            baseline={k: torch.cat([p.baseline[k] for p in parts]) for k in head.baseline},
            own_modulations={c: torch.cat([p.own_modulations[c] for p in parts]) for c in head.own_modulations},
            start_block=head.start_block,
            prefix=torch.cat([p.prefix for p in parts]),
            pooled=head.pooled,
        )

    def state(self) -> dict:
        """A plain dict of tensors for ``torch.save`` (connections as strings)."""
        return {
            "first": self.first,
            "baseline": self.baseline,
            "own_modulations": {str(c): m for c, m in self.own_modulations.items()},
            "start_block": self.start_block,
            "prefix": self.prefix,
            "pooled": self.pooled,
        }

    @classmethod
    def from_state(cls, state: Mapping) -> SharedPass:
        return cls(
            first=dict(state["first"]),
            baseline=dict(state["baseline"]),
            own_modulations={Connection.parse(k): v for k, v in state["own_modulations"].items()},
            start_block=int(state["start_block"]),
            prefix=state["prefix"],
            pooled=bool(state.get("pooled", False)),
        )


def _require_eval(model: LRMEmotionNet) -> None:
    if model.training:
        raise RuntimeError("steering runs in eval mode; call model.eval() first")


@torch.inference_mode()
def shared_pass(model: LRMEmotionNet, features: torch.Tensor, start_block: int) -> SharedPass:
    """Pass 1, the baseline pass 2 and the raw pass-2 output of ``start_block``, in one go."""
    _require_eval(model)
    # Block 1 sees the same input in both passes and feedback acts on its output, so its pass-1
    # output is also its raw pass-2 output.
    block1 = model.single_pass(features, stop_at_block=0)
    first = model.single_pass(block1, start_at_block=0)
    own = model.modulations(first)
    gains = model.gains_from(own)
    prefix = (
        block1 if start_block == 0 else model.single_pass(block1, gains, start_at_block=0, stop_at_block=start_block)
    )
    baseline = model.single_pass(prefix, gains, start_at_block=start_block)
    pooled = start_block == model.last_block and model.pooled_shortcut
    if pooled:
        # For the last block the (B, C) pool of its raw output is all a configuration needs
        # (LRMEmotionNet.heads_from_pooled says why).
        prefix = model.single_pass(prefix, start_at_block=start_block, stop_at="pooled")
    return SharedPass(
        first={k: first[k] for k in (*TARGETS, *(f"{p}_128d" for p in PATHWAYS))},
        baseline={k: baseline[k] for k in TARGETS},
        own_modulations=own,
        start_block=start_block,
        prefix=prefix,
        pooled=pooled,
    )


def steered_modulations(
    model: LRMEmotionNet,
    spec: SteeringSpec,
    own_sources: Mapping[str, torch.Tensor],
    own_modulations: Mapping[Connection, torch.Tensor],
    signals: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    strength: torch.Tensor,
) -> dict[Connection, torch.Tensor]:
    """Every connection's modulation: steered on ``spec.connections`` for rows where ``mask``.

    ``own_sources``/``signals``: pathway -> (N,128); ``mask``: (N,) bool; ``strength``: (N,).
    Rows without a signal, and every unselected connection, keep the model's own feedback.
    """
    mods = dict(own_modulations)
    keep = mask.view(-1, 1, 1, 1)
    for conn in sorted(spec.connections):
        source = blended_source(spec, conn, signals, own_sources)
        steered = method_modulation(model.modblock(conn), source, spec.method, strength)
        mods[conn] = torch.where(keep, steered, own_modulations[conn])
    return mods


def blended_source(
    spec: SteeringSpec, conn: Connection, signals: Mapping[str, torch.Tensor], own_sources: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """What the method receives on ``conn``: alpha * signal + (1 - alpha) * the model's own pass-1 activation."""
    signal = signals[conn.pathway]
    return signal if spec.alpha == 1.0 else spec.alpha * signal + (1.0 - spec.alpha) * own_sources[conn.pathway]


def priming_gains(
    model: LRMEmotionNet,
    spec: SteeringSpec,
    signals: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    strength: torch.Tensor,
) -> dict[int, torch.Tensor] | None:
    """The gains of a steered pass 1 (``spec.priming``), else None. Pass 1 has no own feedback:
    unselected rows and connections get no modulation at all."""
    if not spec.priming:
        return None
    device = mask.device
    zeros = {p: torch.zeros(mask.shape[0], model.config.source_dim, device=device) for p in PATHWAYS}
    blank = {c: torch.zeros(1, device=device) for c in spec.connections}
    return model.gains_from(steered_modulations(model, spec, zeros, blank, signals, mask, strength))


def _repeat(t: torch.Tensor, times: int) -> torch.Tensor:
    return t if times == 1 else t.repeat(times, *([1] * (t.dim() - 1)))


@torch.inference_mode()
def steer_from_shared(
    model: LRMEmotionNet,
    shared: SharedPass,
    spec: SteeringSpec,
    signals: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    strengths: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Steered predictions for each of ``strengths`` (S,): {valence, arousal} of shape (S, B).

    Runs only the gain at the first steered block and the layers after it; the S strengths share
    one batched forward. ``spec.strength`` is ignored in favour of ``strengths``.
    """
    return steered_from_shared(model, shared, spec, signals, mask, strengths)


def steered_from_shared(
    model: LRMEmotionNet,
    shared: SharedPass,
    spec: SteeringSpec,
    signals: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    strengths: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """:func:`steer_from_shared` without inference mode: differentiable in ``signals``.

    Fitting signals by gradient descent (``signals.method=optimized``) runs this under
    ``torch.enable_grad`` on a :meth:`SharedPass.clone` (tensors made in inference mode cannot be
    saved for backward); evaluation runs it through :func:`steer_from_shared`. One body, so the
    fitted objective is exactly the evaluated forward.
    """
    _require_eval(model)
    if spec.priming:
        raise ValueError("priming changes pass 1, so it cannot reuse shared work; use steer_direct")
    if spec.first_block < shared.start_block:
        raise ValueError(f"shared work starts at block {shared.start_block}, spec steers block {spec.first_block}")
    n_strengths, batch = strengths.numel(), mask.shape[0]
    k = shared.start_block
    rows = strengths.to(shared.prefix.device).repeat_interleave(batch)
    own_sources = {p: _repeat(shared.first[f"{p}_128d"], n_strengths) for p in spec.pathways}
    # Modulations of blocks before k are already in the prefix; later ones are needed per strength.
    own_mods = {c: _repeat(m, n_strengths) for c, m in shared.own_modulations.items() if c.block_index >= k}
    sig = {p: _repeat(signals[p], n_strengths) for p in spec.pathways}
    mods = steered_modulations(model, spec, own_sources, own_mods, sig, _repeat(mask, n_strengths), rows)
    gains = model.gains_from(mods)
    h = _repeat(shared.prefix, n_strengths)
    out = model.heads_from_pooled(h, gains[k]) if shared.pooled else model.single_pass(h, gains, start_at_block=k)
    return {t: out[t].view(n_strengths, batch) for t in TARGETS}


@torch.inference_mode()
def steer_direct(
    model: LRMEmotionNet,
    features: torch.Tensor,
    spec: SteeringSpec,
    signals: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Steered predictions {valence, arousal} (B,) with whole passes through the hooked model.

    With ``spec.priming`` pass 1 is steered too (selected connections only; the model has no
    own activations yet), and the model's own feedback in pass 2 comes from those primed
    activations.
    """
    _require_eval(model)
    batch = features.shape[0]
    strength = torch.full((batch,), float(spec.strength), device=features.device)
    first = model.feedforward(features, priming_gains(model, spec, signals, mask, strength))
    own = model.modulations(first)
    sources = {p: first[f"{p}_128d"] for p in PATHWAYS}
    mods = steered_modulations(model, spec, sources, own, signals, mask, strength)
    out = model.feedforward(features, model.gains_from(mods))
    return {t: out[t].view(batch) for t in TARGETS}
