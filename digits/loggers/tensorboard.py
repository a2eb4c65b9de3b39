"""TensorBoard at step = epoch (the default logger)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from digits import plots
from digits.loggers import epoch_step, hparams
from digits.runs import RunDir, RunRecord

log = logging.getLogger("digits.train")


class EpochTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger whose step is the epoch (from 1), and whose finished run fills TensorBoard's HParams
    dashboard and adds the confusion matrix and the misclassified digits."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics, step = epoch_step(metrics, step)
        if metrics:
            super().log_metrics(metrics, step)

    def start(self, cfg: DictConfig) -> None:
        self.log_hyperparams(hparams(cfg))  # hparams.yaml holds them from the start; final metrics come at the end

    @rank_zero_only
    def finish(self, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
        final = {"hparams/val_acc_best": record.val_acc_best or 0.0}
        if record.test_acc is not None:
            final["hparams/test_acc"] = record.test_acc
            self.log_metrics({"test/acc": record.test_acc, "test/loss": record.test_loss or 0.0}, record.epochs)
        self.log_hyperparams(hparams(cfg), final)
        split, probs, labels = plots.labelled_split(preds)
        if probs is not None and labels is not None:
            writer = self.experiment
            writer.add_figure(f"{split}/confusion_matrix", plots.confusion_figure(probs, labels, split), record.epochs)
            fig = plots.mistakes_figure(probs, labels, preds["mistake_index"], preds["mistake_images"])
            writer.add_figure(f"{split}/misclassified", fig, record.epochs)
        self.finalize("success")
