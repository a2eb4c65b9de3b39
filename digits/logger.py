"""TensorBoard: scalars with the epoch as the x-axis, and what a finished run adds (HParams, figures).

Every scalar this project logs is per epoch. Lightning writes them at the optimizer step and adds an `epoch` scalar
of its own, so TensorBoard's first card is an epoch-versus-step line and runs with different batch sizes do not line
up. Here each record is written at step = epoch, counted from 1 as metrics.json counts, and `epoch` itself is not
written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from digits import plots
from digits.runs import RunRecord
from digits.schema import choice, plain_name


class EpochTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger whose step is the epoch (from 1) for every record Lightning makes."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)  # Lightning adds it to every record it logs
        if epoch is not None:
            step = int(epoch) + 1
        if metrics:
            super().log_metrics(metrics, step)


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The knobs a comparison filters by, as they ran (a cycled momentum says so)."""
    sched = cfg.get("scheduler") or {}
    momentum = cfg.optim.get("momentum", (cfg.optim.get("betas") or [0.0])[0])
    if sched.get("cycle_momentum"):
        momentum = f"cycled {sched.base_momentum}-{sched.max_momentum}"
    flat = {
        "model": choice("model", cfg),
        "optim": choice("optim", cfg),
        "scheduler": choice("scheduler", cfg) if sched else "none",
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": plain_name(cfg.init),
        "l1": cfg.l1,
        "weight_decay": cfg.optim.get("weight_decay", 0.0),
        "momentum": momentum,
        "label_smoothing": cfg.label_smoothing,
        "dropout": cfg.model.get("dropout", 0.0),
        "batch_size": cfg.data.batch_size,
        "augment": cfg.data.augment,
        "max_epochs": cfg.trainer.max_epochs,
        "final_weights": plain_name(cfg.final_weights),
    }
    return {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in flat.items()}


def log_final(trainer: L.Trainer, cfg: DictConfig, record: RunRecord, preds: dict[str, Any]) -> None:
    """Final metrics in the HParams dashboard, test/acc at the last epoch, confusion matrix and mistakes."""
    logger = trainer.logger
    if not isinstance(logger, TensorBoardLogger):
        return
    final = {"hparams/val_acc_best": record.val_acc_best or 0.0}
    if record.test_acc is not None:
        final["hparams/test_acc"] = record.test_acc
        logger.log_metrics({"test/acc": record.test_acc, "test/loss": record.test_loss or 0.0}, record.epochs)
    logger.log_hyperparams(hparams(cfg), final)
    split, probs, labels = plots.labelled_split(preds)
    if probs is not None and labels is not None:
        writer = logger.experiment
        writer.add_figure(f"{split}/confusion_matrix", plots.confusion_figure(probs, labels, split), record.epochs)
        fig = plots.mistakes_figure(probs, labels, preds["mistake_index"], preds["mistake_images"])
        writer.add_figure(f"{split}/misclassified", fig, record.epochs)
    logger.finalize("success")
