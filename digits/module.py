"""One LightningModule for every architecture: cross-entropy, per-stage accuracy, optimizer and schedule from config.

Losses and correct counts accumulate on the device and are read once per epoch, so a training step never waits for
the host. The global RNG (dropout) is reseeded from (seed, epoch) at each epoch start: with the data order and the
augmentation also functions of (seed, epoch), a run resumed from an end-of-epoch checkpoint repeats exactly what
the uninterrupted run would have done.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from digits.errors import UserError
from digits.seeding import DROPOUT, stream_seed

NUM_CLASSES = 10


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        l1: float = 0.0,
        label_smoothing: float = 0.0,
        seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        config: dict | None = None,
        fingerprint: dict | None = None,
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.l1 = l1
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.channels_last = channels_last
        self.compile_net = compile
        self.config = config or {}  # plain values, stored in every checkpoint so it can be rebuilt without Hydra
        self.fingerprint = fingerprint  # the run's (digits.fingerprint), so a resume knows the checkpoint is its own
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        self.val_acc_best = 0.0
        self._loss_sum: dict[str, torch.Tensor] = {}
        self._count: dict[str, int] = {}
        self._train_epoch: tuple[int, torch.Tensor, torch.Tensor] = (-1, torch.zeros(()), torch.zeros(()))

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net:
            self.net.compile()  # in place: state_dict keys stay those of the plain module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    # --- accumulators: a device tensor per stage, read once per epoch ----------------------------------------------
    def _reset(self, stage: str) -> None:
        self._loss_sum.pop(stage, None)
        self._count[stage] = 0

    def _add(self, stage: str, loss: torch.Tensor, n: int) -> None:
        total = loss.detach().float() * n
        self._loss_sum[stage] = self._loss_sum[stage] + total if stage in self._loss_sum else total
        self._count[stage] = self._count.get(stage, 0) + n

    def _mean_loss(self, stage: str) -> torch.Tensor:
        total, n = self._loss_sum.pop(stage, None), self._count.pop(stage, 0)
        return torch.tensor(float("nan"), device=self.device) if total is None else total / max(n, 1)

    def l1_penalty(self) -> torch.Tensor:
        """Sum of |w| over weight matrices and kernels (biases and norm parameters are not penalised)."""
        return sum(p.abs().sum() for p in self.net.parameters() if p.ndim > 1)  # type: ignore[return-value]

    # --- training ----------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        torch.manual_seed(stream_seed(self.seed, self.current_epoch, DROPOUT) + self.global_rank)
        self.train_acc.reset()
        self._reset("train")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self._add("train", loss, len(y))
        self.train_acc.update(logits.detach(), y)
        if self.l1 > 0:
            loss = loss + self.l1 * self.l1_penalty()
        return loss

    def train_epoch_metrics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's mean training loss and accuracy, computed once (callbacks read them before this module's
        own on_train_epoch_end runs)."""
        if self._train_epoch[0] != self.current_epoch:
            self._train_epoch = (self.current_epoch, self._mean_loss("train"), self.train_acc.compute())
        return self._train_epoch[1], self._train_epoch[2]

    def on_train_epoch_end(self) -> None:
        loss, acc = self.train_epoch_metrics()
        self.log("train/loss", loss, sync_dist=True)
        self.log("train/acc", acc, sync_dist=True)

    # --- validation --------------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_acc.reset()
        self._reset("val")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._add("val", F.cross_entropy(logits, y), len(y))
        self.val_acc.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.log("val/loss", self._mean_loss("val"), sync_dist=True)
        self.log("val/acc", acc, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.val_acc_best = max(self.val_acc_best, float(acc))  # one host read per epoch
            self.log("val/acc_best", self.val_acc_best, sync_dist=True)

    # --- optimisation ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return opt
        # Lightning steps the schedule after every optimizer step, the last one included, so the schedule is asked
        # for its value at index `steps`. CosineAnnealingLR(T_max=steps) ends there at eta_min; OneCycleLR's last
        # index is total_steps - 1, so it gets steps + 1 (with `steps` its linear anneal would extrapolate past the
        # end to a negative rate, which the checkpoint would then hold).
        steps = int(self.trainer.estimated_stepping_batches)
        func = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        params = inspect.signature(func).parameters
        extra = {k: v for k, v in (("total_steps", steps + 1), ("T_max", steps)) if k in params}
        try:
            sched = self.scheduler_factory(optimizer=opt, **extra)
        except (ZeroDivisionError, ValueError) as e:  # OneCycleLR divides by its warm-up's length, 0 for some counts
            raise UserError(
                f"the scheduler cannot run over {steps} optimizer steps ({type(e).__name__}: {e}); train more "
                "batches or epochs, or change scheduler.pct_start"
            ) from None
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoints hold plain values only -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_acc_best"] = float(self.val_acc_best)
        checkpoint["digits_config"] = self.config
        checkpoint["digits_fingerprint"] = (self.fingerprint or {}).get("digest")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best = float(checkpoint.get("val_acc_best", 0.0))
