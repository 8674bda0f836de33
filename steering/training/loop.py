"""Training loop for the LRM emotion model, usable without Hydra (the demo calls it directly).

The loss is applied on every pass (per-pass weights), so the feedback ModBlocks get a gradient
through pass 2 — the defect of the earlier pipeline was that they never did. The best checkpoint
is chosen on the ``val`` split; the ``test`` split is never touched here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from steering.config.schema import ArchConf, TrainConf
from steering.data import FeatureFile, split_indices
from steering.model import LRMEmotionNet, ModelConfig, build_model, save_checkpoint
from steering.stats.metrics import pearson
from steering.util.hardware import cpu_threads, resolve_device
from steering.vocab import TARGETS

log = logging.getLogger(__name__)
MetricLogger = Callable[[dict[str, float], int], None]


def check_settings(cfg: TrainConf) -> None:
    """What the fields cannot say alone: one loss weight per forward pass."""
    if len(cfg.pass_weights) != cfg.forward_passes:
        raise ValueError(
            f"pass_weights {list(cfg.pass_weights)} must have one weight per pass (forward_passes={cfg.forward_passes})"
        )


@dataclass
class Evaluation:
    """Per-pass predictions on some indices, with Pearson r of the last pass and the feedback effect."""

    predictions: dict[str, np.ndarray]  # target -> (passes, N)
    ratings: dict[str, np.ndarray]  # target -> (N,)

    def pearson(self, target: str, pass_index: int = -1) -> float:
        return pearson(self.predictions[target][pass_index], self.ratings[target])

    def feedback_effect(self, target: str) -> float:
        """Mean |last pass - pass 1|: how much the model's own feedback moves its output."""
        p = self.predictions[target]
        return float(np.mean(np.abs(p[-1] - p[0])))

    def summary(self, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in TARGETS:
            out[f"{prefix}_r_{t}"] = self.pearson(t)
            out[f"{prefix}_r_{t}_pass1"] = self.pearson(t, 0)
            out[f"{prefix}_feedback_effect_{t}"] = self.feedback_effect(t)
        out[f"{prefix}_r_mean"] = (out[f"{prefix}_r_valence"] + out[f"{prefix}_r_arousal"]) / 2
        return out


@dataclass
class TrainResult:
    checkpoint: Path
    best_val_pearson: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _selection_r(metrics: Mapping[str, float]) -> float:
    """Mean val r for choosing the checkpoint; a constant prediction (r undefined: nan) counts as r = 0,
    so an untrained model that predicts a constant is still saved at its first epoch."""
    return float(np.mean([np.nan_to_num(metrics[f"val_r_{t}"], nan=0.0) for t in TARGETS]))


@torch.no_grad()
def evaluate(
    model: LRMEmotionNet,
    features: FeatureFile,
    indices: Sequence[int] | np.ndarray,
    forward_passes: int = 2,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> Evaluation:
    """Eval-mode predictions of every pass on ``indices``; restores the model's training flag."""
    was_training = model.training
    model.eval()
    preds: dict[str, list[np.ndarray]] = {t: [] for t in TARGETS}
    ratings: dict[str, list[np.ndarray]] = {t: [] for t in TARGETS}
    try:
        for batch in features.batches(indices, batch_size):
            outs = model(batch.features.to(device), forward_passes=forward_passes, return_list=True)
            for t in TARGETS:
                preds[t].append(torch.stack([o[t][:, 0] for o in outs]).cpu().numpy())
                ratings[t].append(getattr(batch, t).numpy())
    finally:
        model.train(was_training)
    return Evaluation(
        predictions={t: np.concatenate(preds[t], axis=1) for t in TARGETS},
        ratings={t: np.concatenate(ratings[t]) for t in TARGETS},
    )


def pass_loss(outputs: list[dict[str, torch.Tensor]], valence: torch.Tensor, arousal: torch.Tensor, cfg: TrainConf):
    """Weighted MSE summed over passes and targets."""
    loss = valence.new_zeros(())
    for weight, out in zip(cfg.pass_weights, outputs):
        loss = loss + weight * (
            cfg.target_weights[0] * F.mse_loss(out["valence"][:, 0], valence)
            + cfg.target_weights[1] * F.mse_loss(out["arousal"][:, 0], arousal)
        )
    return loss


def train_model(
    features_path: str | Path,
    model_config: ModelConfig | ArchConf,
    train_config: TrainConf | None,
    checkpoint_path: str | Path,
    log_metrics: MetricLogger | None = None,
    initial: LRMEmotionNet | None = None,
) -> TrainResult:
    """Train on the ``train`` split, keep the checkpoint with the best mean val Pearson r.

    ``initial``: a loaded model to fine-tune (``steering.training.finetune``); None builds a new
    one from ``model_config``.

    ``log_metrics(metrics, step)`` receives per-epoch curves (e.g. ``mlflow.log_metrics``).
    The checkpoint is in the reference layout with ``iteration``, ``optimizer`` and
    ``best_val_pearson`` (the mean of valence and arousal r on ``val``).
    """
    cfg = train_config if train_config is not None else TrainConf()
    check_settings(cfg)
    with cpu_threads(cfg.num_threads):
        return _train(features_path, model_config, cfg, Path(checkpoint_path), log_metrics, initial)


def _epoch(
    model: LRMEmotionNet,
    ff: FeatureFile,
    order: np.ndarray,
    cfg: TrainConf,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device | str,
    bar: tqdm,
    epoch: int,
) -> list[float]:
    """One pass over the train clips in ``order``; the loss of each optimiser step."""
    model.train()
    losses: list[float] = []
    for batch in ff.batches(order, cfg.batch_size):
        if len(batch.indices) < 2:  # BatchNorm needs two samples
            continue
        outs = model(batch.features.to(device), forward_passes=cfg.forward_passes, return_list=True)
        loss = pass_loss(outs, batch.valence.to(device), batch.arousal.to(device), cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
    return losses


def _train(
    features_path: str | Path,
    model_config: ModelConfig | ArchConf,
    cfg: TrainConf,
    checkpoint_path: Path,
    log_metrics: MetricLogger | None,
    initial: LRMEmotionNet | None = None,
) -> TrainResult:
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = (initial if initial is not None else build_model(model_config)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = time.perf_counter()
    with FeatureFile(features_path) as ff:
        if ff.mel_bins != model.config.mel_bins:
            raise ValueError(
                f"{ff.path}: features have {ff.mel_bins} mel bins, the model expects {model.config.mel_bins}"
            )
        train_idx = split_indices(len(ff), "train", cfg.split, cfg.train_fraction)
        val_idx = split_indices(len(ff), "val", cfg.split, cfg.train_fraction)
        if len(train_idx) == 0 or len(val_idx) < 2:
            raise ValueError(f"{ff.path}: {len(ff)} clips are too few for a train/val split")
        steps_per_epoch = int(np.ceil(len(train_idx) / cfg.batch_size))
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
            if cfg.cosine_schedule
            else None
        )
        log.info(
            "training on %s: %d train / %d val clips, %d epochs of %d steps",
            ff.path,
            len(train_idx),
            len(val_idx),
            cfg.epochs,
            steps_per_epoch,
        )
        best, best_epoch, history, step = -np.inf, -1, [], 0
        bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="train", disable=not cfg.progress, unit="step")
        try:
            for epoch in range(1, cfg.epochs + 1):
                losses = _epoch(model, ff, rng.permutation(train_idx), cfg, optimizer, scheduler, device, bar, epoch)
                step += len(losses)
                val = evaluate(model, ff, val_idx, cfg.forward_passes, cfg.eval_batch_size, device)
                metrics = {"train_loss": float(np.mean(losses)) if losses else float("nan"), **val.summary("val")}
                metrics["lr"] = optimizer.param_groups[0]["lr"]
                history.append({"epoch": epoch, **metrics})
                if log_metrics is not None:
                    log_metrics(metrics, epoch)
                log.info(
                    "epoch %d: loss %.4f, val r valence %.3f arousal %.3f",
                    epoch,
                    metrics["train_loss"],
                    metrics["val_r_valence"],
                    metrics["val_r_arousal"],
                )
                if _selection_r(metrics) > best:
                    best, best_epoch = _selection_r(metrics), epoch
                    save_checkpoint(
                        model,
                        checkpoint_path,
                        iteration=step,
                        epoch=epoch,
                        best_val_pearson=float(best),
                        val_pearson={t: metrics[f"val_r_{t}"] for t in TARGETS},
                        optimizer=optimizer.state_dict(),
                        model_config=model.config.to_dict(),
                    )
        finally:
            bar.close()
    seconds = time.perf_counter() - start
    log.info("best val r (mean) %.3f at epoch %d; checkpoint %s (%.0f s)", best, best_epoch, checkpoint_path, seconds)
    return TrainResult(Path(checkpoint_path), float(best), best_epoch, history, seconds)
