"""Signals fitted by gradient descent (``signals.method=optimized``), with the model frozen.

One vector per group (category) and steered pathway, so that the steered final-pass predictions of
the group's clips match their ratings (mean squared error over valence and arousal). All groups
are fitted in one batch: each clip reads its own group's vector, so the gradients of different
groups are independent. The forward is given as a function (the steering engine's, built by the
caller), so this module knows nothing of the model.

Early stopping and the step size use held-out clips *of the signal split* (``holdout``), never
the ``val`` split: the presets select configurations on ``val`` (``data.eval_split=val``), and no
evaluated clip may enter fitting or stopping. Each step size runs from the starting vectors (the
category means, so step 0 is ``signals.method=mean``) for up to ``steps`` Adam steps, stopping after
``patience`` steps without a lower held-out loss; the step with the lowest held-out loss is kept,
and the step size whose kept step has the lowest held-out loss wins (ties: the earlier one).
The loop has no randomness and a fixed order, so a seed gives the same vectors bit for bit on CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from steering.config.schema import OptimizeConf
from steering.errors import ResultError

log = logging.getLogger(__name__)

#: ``predict(batch number, signals (B, P, D)) -> (B, 2)`` steered (valence, arousal), differentiable.
Predict = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FitProblem:
    """What a fit runs on; rows are the clips in the order the batches cover them.

    ``init``: (K, P, D) starting vectors per group and steered pathway; ``groups``: (N,) group
    number of each row; ``targets``: (N, 2) ratings; ``held``: (N,) True for held-out rows;
    ``batches``: consecutive row ranges, ``predict`` runs one of them.
    """

    init: np.ndarray
    groups: np.ndarray
    targets: np.ndarray
    held: np.ndarray
    batches: Sequence[slice]
    predict: Predict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class Curve:
    """One step size's run: train and held-out loss at each step (step 0: the starting vectors)."""

    step_size: float
    train: list[float] = field(default_factory=list)
    holdout: list[float] = field(default_factory=list)
    best_step: int = 0

    @property
    def best_holdout(self) -> float:
        return self.holdout[self.best_step]

    def to_dict(self) -> dict:
        return {"step_size": self.step_size, "best_step": self.best_step, "train": self.train, "holdout": self.holdout}


@dataclass
class FitResult:
    """The kept vectors (K, P, D) float64, the chosen step size and step, and every curve."""

    vectors: np.ndarray
    step_size: float
    step: int
    curves: list[Curve]

    @property
    def chosen(self) -> Curve:
        return next(c for c in self.curves if c.step_size == self.step_size)

    @property
    def losses(self) -> dict[str, float]:
        """Train and held-out loss at the start (the means) and at the kept step."""
        c = self.chosen
        return {
            "train_loss_start": c.train[0],
            "holdout_loss_start": c.holdout[0],
            "train_loss": c.train[self.step],
            "holdout_loss": c.holdout[self.step],
        }


def _losses_and_grad(problem: FitProblem, vectors: torch.Tensor, want_grad: bool) -> tuple[float, float, torch.Tensor]:
    """(mean train loss, mean held-out loss, gradient of the train loss) at ``vectors``."""
    groups = torch.as_tensor(problem.groups, dtype=torch.long, device=problem.device)
    targets = torch.as_tensor(problem.targets, dtype=vectors.dtype, device=problem.device)
    held = torch.as_tensor(problem.held, dtype=torch.bool, device=problem.device)
    n_fit, n_held = int((~held).sum()), int(held.sum())
    train_sum = held_sum = 0.0
    grad = torch.zeros_like(vectors)
    for number, rows in enumerate(problem.batches):
        with torch.set_grad_enabled(want_grad):
            pred = problem.predict(number, vectors[groups[rows]])
            per_clip = ((pred - targets[rows]) ** 2).mean(dim=1)
            fit_part = per_clip[~held[rows]].sum()
        held_sum += float(per_clip[held[rows]].detach().sum())
        train_sum += float(fit_part.detach())
        if want_grad and fit_part.requires_grad:
            # autograd.grad, not backward(): the model's parameters never collect gradients
            (part,) = torch.autograd.grad(fit_part / n_fit, vectors)
            grad += part
    return train_sum / max(n_fit, 1), held_sum / max(n_held, 1), grad


def _run(problem: FitProblem, settings: OptimizeConf, step_size: float) -> tuple[Curve, torch.Tensor]:
    """Adam from ``problem.init`` with early stopping on the held-out loss: the curve and the kept vectors."""
    vectors = torch.tensor(problem.init, dtype=torch.float32, device=problem.device, requires_grad=True)
    optimizer = torch.optim.Adam([vectors], lr=step_size)
    curve, best = Curve(float(step_size)), vectors.detach().clone()
    for step in range(settings.steps + 1):
        train, held, grad = _losses_and_grad(problem, vectors, want_grad=step < settings.steps)
        if not (math.isfinite(train) and math.isfinite(held)):
            if step == 0:
                raise ResultError("signals.method=optimized: the starting signals steer to non-finite predictions")
            log.warning("step size %g: the loss is not finite at step %d; stopped there", step_size, step)
            break
        curve.train.append(train)
        curve.holdout.append(held)
        if held < curve.holdout[curve.best_step]:
            curve.best_step, best = step, vectors.detach().clone()
        if step == settings.steps or step - curve.best_step >= settings.patience:
            break
        vectors.grad = grad
        optimizer.step()
    return curve, best


def fit_vectors(problem: FitProblem, settings: OptimizeConf) -> FitResult:
    """Fit ``problem`` with each step size in ``settings``; keep the best held-out step of the best one.

    When no step beats the start, the result is the starting vectors themselves (float64, unrounded).
    """
    if not problem.held.any() or problem.held.all():
        raise ValueError("a fit needs clips to fit on and held-out clips to stop on")
    curves, kept = [], []
    for step_size in settings.step_sizes:
        curve, vectors = _run(problem, settings, float(step_size))
        curves.append(curve)
        kept.append(vectors)
        log.info(
            "step size %g: held-out loss %.5f -> %.5f at step %d of %d",
            step_size,
            curve.holdout[0],
            curve.best_holdout,
            curve.best_step,
            len(curve.holdout) - 1,
        )
    best = min(range(len(curves)), key=lambda i: (curves[i].best_holdout, i))
    chosen = curves[best]
    vectors = problem.init if chosen.best_step == 0 else kept[best].to("cpu", torch.float64).numpy()
    return FitResult(np.array(vectors, dtype=np.float64), chosen.step_size, chosen.best_step, curves)
