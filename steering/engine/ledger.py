"""The intervention ledger: where a run's steering signal went and whether it acted (docs/model.md).

A null Δr can mean that steering moved predictions in no useful direction, or that the intervention
never reached the output (normalisation cancelled s, the gain left every channel alone, or zeroed
them). The ledger tells the two apart. For each steered connection it records, on a bounded probe
(the first ``batch_size`` steered clips of the first draw):

* the signal at each stage of the ModBlock (:data:`STAGES`: the block's input, after
  normalisation, after tanh, after the 1x1 conv, after the gains, the block's m, and the method's
  final modulation), each as the mean and sd over all elements and the L2 norm per clip averaged
  over clips; a stage the method switches off (``bypass``) is None;
* the gain ``1 + sum m`` the steered block's output is multiplied by before the ReLU (every
  connection on the block adds its m), over clips and channels: mean, sd, the share of entries it
  silences (gain <= 0: the ReLU zeroes them) and the share it more than doubles (gain > 2);
* the relative change ``||steered - baseline|| / ||baseline||`` over the probe of the steered
  block's output (after gain and ReLU) and of the final embedding, against the baseline pass 2 (the
  model's own feedback), from whole passes through the model's one forward;
* how much the final modulation changes when s is replaced by a reference strength (1, or 2 when
  s = 1): below :data:`STRENGTH_FREE` the intervention cannot depend on s (``lrm`` at s > 0).

``took_effect`` comes from the run's full predictions (every clip, every draw): 1 when any steered
prediction differs from the baseline prediction by more than :func:`effect_tolerance`.
The probe runs in fp32 whatever the run's precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from steering.engine.core import blended_source, priming_gains, steered_modulations
from steering.engine.methods import FINAL_STAGE, method_modulation
from steering.engine.spec import SteeringSpec
from steering.model.lrm import TRACE_STAGES, Connection
from steering.model.network import LRMEmotionNet
from steering.util.hardware import DTYPES
from steering.vocab import LAYERS, PATHWAYS, TARGETS

#: The stages of the ledger, in order: the ModBlock's (steering.model.lrm.TRACE_STAGES), then the method's m.
STAGES = (*TRACE_STAGES, FINAL_STAGE)
#: Statistics of each stage (mean and sd over all elements, L2 norm per clip averaged over clips).
STAGE_STATS = ("mean", "sd", "norm")
#: Gain statistics over clips and channels of the steered block.
GAIN_STATS = ("mean", "sd", "silenced_share", "doubled_share")
#: Multiples of the precision's eps (times the predictions' scale) a prediction may move by as float noise.
EFFECT_EPS_MULTIPLE = 16
#: Relative change of the final modulation between s and the reference strength below which s does not matter.
STRENGTH_FREE = 1e-2
#: The file the full ledger is kept in beside predictions.csv.
LEDGER_FILE = "ledger.json"


def _relative(new: torch.Tensor, old: torch.Tensor) -> float:
    denom = float(old.double().norm())
    return float((new.double() - old.double()).norm()) / denom if denom > 0 else math.nan


def stage_stats(x: torch.Tensor | None) -> dict[str, float] | None:
    """Mean and sd over all elements of (n, width) ``x``, and its L2 norm per row averaged over rows."""
    if x is None:
        return None
    x = x.double().flatten(1)
    return {"mean": float(x.mean()), "sd": float(x.std(unbiased=False)), "norm": float(x.norm(dim=1).mean())}


def gain_stats(gain: torch.Tensor) -> dict[str, float]:
    """Mean and sd of a gain (n, C, ...) over clips and channels, the share <= 0 and the share > 2."""
    g = gain.double().flatten()
    return {
        "mean": float(g.mean()),
        "sd": float(g.std(unbiased=False)),
        "silenced_share": float((g <= 0).double().mean()),
        "doubled_share": float((g > 2).double().mean()),
    }


@torch.inference_mode()
def probe_ledger(
    model: LRMEmotionNet, spec: SteeringSpec, features: torch.Tensor, signals: Mapping[str, torch.Tensor]
) -> dict:
    """The ledger of ``spec`` on probe clips ``features`` (n, T, mel), all steered with ``signals`` (n, 128).

    Returns {"clips", "connections": {"pathway->layer": {stages, gain, block_change, strength_change}},
    "embedding_change"}; whole passes, fp32.
    """
    n = features.shape[0]
    mask = torch.ones(n, dtype=torch.bool, device=features.device)
    strength = torch.full((n,), float(spec.strength), device=features.device)
    reference = torch.full_like(strength, 2.0 if spec.strength == 1.0 else 1.0)
    first = model.single_pass(features)
    own_mods = model.modulations(first)
    base_taps: dict = {}
    model.single_pass(features, model.gains_from(own_mods), taps=base_taps)
    if spec.priming:  # the steered run's own feedback comes from its primed pass 1
        first = model.single_pass(features, priming_gains(model, spec, signals, mask, strength))
        own_mods = model.modulations(first)
    own = {p: first[f"{p}_128d"] for p in PATHWAYS}
    mods = steered_modulations(model, spec, own, own_mods, signals, mask, strength)
    gains = model.gains_from(mods)
    taps: dict = {}
    model.single_pass(features, gains, taps=taps)
    connections = {}
    for conn in sorted(spec.connections):
        block, source = model.modblock(conn), blended_source(spec, conn, signals, own)
        trace: dict = {}
        method_modulation(block, source, spec.method, strength, trace)
        at_reference = method_modulation(block, source, spec.method, reference)
        k = conn.block_index
        connections[str(conn)] = {
            "stages": {stage: stage_stats(trace.get(stage)) for stage in STAGES},
            "gain": gain_stats(gains[k]),
            "block_change": _relative(taps[k], base_taps[k]),
            "strength_change": _relative(trace[FINAL_STAGE], at_reference.flatten(1)),
            "reference_strength": float(reference[0]),
        }
    return {
        "clips": n,
        "connections": connections,
        "embedding_change": _relative(taps["embedding"], base_taps["embedding"]),
    }


def effect_tolerance(base: Mapping[str, np.ndarray], precision: str) -> float:
    """How far a prediction may move as float noise: 16 eps of the run's precision times max(1, max |baseline|)."""
    eps = torch.finfo(DTYPES.get(precision, torch.float32)).eps
    scale = max([1.0, *(float(np.max(np.abs(base[t]), initial=0.0)) for t in TARGETS)])
    return EFFECT_EPS_MULTIPLE * eps * scale


def prediction_change(base: Mapping[str, np.ndarray], steered: Mapping[str, np.ndarray]) -> float:
    """The largest |steered - baseline| over targets, clips and draws (steered: {target: (draws, N)})."""
    diffs = [np.max(np.abs(np.asarray(steered[t]) - np.asarray(base[t])[None, :]), initial=0.0) for t in TARGETS]
    return float(max(diffs))


def effect(base: Mapping[str, np.ndarray], steered: Mapping[str, np.ndarray], precision: str) -> dict:
    """``took_effect`` (1/0), the tolerance and the largest prediction change of a run's full predictions."""
    tolerance, change = effect_tolerance(base, precision), prediction_change(base, steered)
    return {"took_effect": int(change > tolerance), "tolerance": tolerance, "max_prediction_change": change}


def run_ledger(
    model: LRMEmotionNet,
    spec: SteeringSpec,
    probe: tuple[torch.Tensor, Mapping[str, torch.Tensor]] | None,
    base: Mapping[str, np.ndarray],
    steered: Mapping[str, np.ndarray],
    precision: str,
) -> dict:
    """The whole ledger of a run: its configuration, :func:`effect` of the full predictions and, when
    ``probe`` (features, signals) of steered clips is given, :func:`probe_ledger` on them."""
    ledger: dict = {
        "method": spec.method,
        "strength": float(spec.strength),
        "alpha": float(spec.alpha),
        "priming": bool(spec.priming),
        "precision": precision,
        **effect(base, steered, precision),
        "clips": 0,
        "connections": {},
        "embedding_change": math.nan,
    }
    if probe is not None and probe[0].shape[0]:
        ledger.update(probe_ledger(model, spec, *probe))
    return ledger


def _name(conn: str) -> str:
    parsed = Connection.parse(conn)
    return f"{parsed.pathway}_{parsed.layer}"


def ledger_metrics(ledger: Mapping) -> dict[str, float]:
    """The ledger's scalars as run metrics: per connection the stage norms, gain stats and block change;
    over connections (mean) gain stats and block change; embedding change, took_effect, ignores_strength."""
    out: dict[str, float] = {"took_effect": float(ledger["took_effect"])}
    conns = ledger.get("connections") or {}
    if not conns:
        return out
    for conn, entry in conns.items():
        name = _name(conn)
        for stage, stats in entry["stages"].items():
            if stats is not None:
                out[f"ledger_{name}_{stage}_norm"] = stats["norm"]
        for stat in GAIN_STATS:
            out[f"gain_{name}_{stat}"] = entry["gain"][stat]
        out[f"block_change_{name}"] = entry["block_change"]
    for stat in ("mean", "silenced_share", "doubled_share"):
        out[f"gain_{stat}"] = float(np.mean([e["gain"][stat] for e in conns.values()]))
    changes = np.array([e["block_change"] for e in conns.values()], dtype=np.float64)
    # nan when no block output was finite (a run whose steered pass overflowed)
    out["block_change"] = float(changes[np.isfinite(changes)].mean()) if np.isfinite(changes).any() else math.nan
    out["embedding_change"] = float(ledger["embedding_change"])
    out["ignores_strength"] = float(all(e["strength_change"] < STRENGTH_FREE for e in conns.values()))
    return out


def ledger_notes(metrics: Mapping[str, float], method: str, strength: float) -> list[str]:
    """Sentences for a run's summary: no effect, an intervention that cannot depend on s, silenced channels."""
    notes = []
    if metrics.get("took_effect") == 0.0:
        notes.append(
            "no effect: the steered predictions equal the baseline (no prediction moved beyond float noise; "
            f"see {LEDGER_FILE})"
        )
    if metrics.get("ignores_strength") == 1.0:
        notes.append(
            f"method {method} cannot depend on s: its modulation at s={strength:g} equals the one at another "
            f"strength (within {STRENGTH_FREE:.0%}); the normalisation cancels s"
            if method == "lrm"
            else f"method {method} at s={strength:g} gives the same modulation as at another strength"
        )
    for pathway in PATHWAYS:
        for layer in LAYERS:
            share = metrics.get(f"gain_{pathway}_{layer}_silenced_share")
            if share is not None and share > 0.5:
                notes.append(
                    f"the gain on {pathway}->{layer} silences {share:.0%} of its channels "
                    "(gain <= 0, zeroed by the ReLU)"
                )
    return notes
