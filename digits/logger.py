"""TensorBoard logging with the epoch as the x-axis.

Every scalar this project logs is per epoch. Lightning writes them at the optimizer step and adds an `epoch` scalar
of its own, so TensorBoard's first card is an epoch-versus-step line and runs with different batch sizes do not line
up. Here each record is written at step = epoch, counted from 1 as metrics.json counts, and `epoch` itself is not
written.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


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
