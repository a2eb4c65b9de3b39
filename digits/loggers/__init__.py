"""The loggers a run can write to: TensorBoard (the default), a CSV file and MLflow, alone or together (`logger=many`);
one module each (tensorboard.py, csv_file.py, mlflow_run.py), and here what they share.

Every scalar this project logs is per epoch. Lightning writes them at the optimizer step and adds an `epoch` scalar
of its own, so runs with different batch sizes do not line up and the first chart is an epoch-versus-step line. Each
logger here writes every record at step = epoch, counted from 1 as metrics.json counts, and drops `epoch` itself;
metrics.json's per-epoch lists hold the same numbers, so any logger's curves can be held against the run's record.

Each logger also has `start` (before training: parameters, and for MLflow the run itself, so a server that does not
answer is one line before any epoch), `finish` (after testing: final metrics, figures, artifacts) and `stop` (an
interrupted or failed run). metrics.json stays the record every tool reads; the loggers are views of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from digits.runs import RunDir, RunRecord
from digits.schema import choice, plain_name

log = logging.getLogger("digits.train")


def epoch_step(metrics: Mapping[str, float], step: int | None) -> tuple[dict[str, float], int | None]:
    """Lightning's record with its `epoch` entry turned into the step (from 1)."""
    metrics = dict(metrics)
    epoch = metrics.pop("epoch", None)  # Lightning adds it to every record it logs
    return metrics, (int(epoch) + 1 if epoch is not None else step)


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


def final_metrics(record: RunRecord) -> dict[str, float]:
    """What a finished run adds at its last epoch: the test scores (and the averaged weights' validation score)."""
    out = {}
    if record.test_acc is not None:
        out["test/acc"] = record.test_acc
    if record.test_loss is not None:
        out["test/loss"] = record.test_loss
    if record.val_acc_average is not None:
        out["val/acc_average"] = record.val_acc_average
    return out


# --- building them ------------------------------------------------------------------------------------------------
def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The config's loggers (`logger.tensorboard`, `logger.csv`, `logger.mlflow`), not yet started. Raises UserError
    (one line) for an MLflow server that does not answer, before anything is written."""
    from hydra.utils import instantiate

    made = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        if name == "mlflow":
            from digits.loggers.mlflow_run import fill_mlflow

            fill_mlflow(cfg)
        made.append(instantiate(cfg.logger[name]))
    return made


def start(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Once the run dir is known to be this run's: parameters logged, an MLflow run created or continued."""
    for lg in trainer.loggers:
        if hasattr(lg, "start"):
            lg.start(cfg)


def finish(trainer: L.Trainer, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
    for lg in trainer.loggers:
        if hasattr(lg, "finish"):
            lg.finish(cfg, run_dir, record, preds)


def stop(trainer: L.Trainer, status: str) -> None:
    """An interrupted or failed run: each logger says so (MLflow marks its run KILLED or FAILED)."""
    for lg in trainer.loggers:
        if hasattr(lg, "stop"):
            lg.stop(status)
