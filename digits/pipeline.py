"""The training pipeline behind `python -m digits.train`: build from config, fit, then predict, write, record, log.

Data flows one way: CSV -> tensors (DigitsDataModule) -> Classifier -> TensorBoard events, checkpoints,
predictions.npz, metrics.json (and submission.csv for an unlabelled test split).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from digits.callbacks import RunRecorder, SignalsAsInterrupts, TailAverage
from digits.data.datamodule import DigitsDataModule
from digits.devices import auto_batch_size, auto_channels_last, auto_precision, keep_freed_buffers, on_gpu
from digits.errors import Interrupted, UserError
from digits.evaluate import load_checkpoint, predict_splits, test_scores, val_accuracy
from digits.logger import hparams, log_final
from digits.models.init import apply_init
from digits.module import Classifier
from digits.runs import RunDir, RunRecord
from digits.schema import identity, plain_config, plain_name

log = logging.getLogger("digits.train")


# --- building -----------------------------------------------------------------------------------------------------
def build(cfg: DictConfig, callbacks: list[Callback] | None = None) -> tuple[DigitsDataModule, Classifier, L.Trainer]:
    """The data module, the LightningModule and the Trainer a config describes (used by train and benchmarks)."""
    try:
        return _build(cfg, callbacks)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        text = " ".join(str(e).split())
        raise UserError(f"bad config: {text[:400]}") from None


def _build(cfg: DictConfig, callbacks: list[Callback] | None) -> tuple[DigitsDataModule, Classifier, L.Trainer]:
    cfg.data.batch_size = auto_batch_size(cfg)  # resolved in place, so config.yaml and hparams show the real value
    if cfg.data.val_fraction == 0:
        log.info(
            "data.val_fraction=0: training on every labelled row for %d epoch%s; no validation, no early "
            "stopping, the %s weights are kept",
            cfg.trainer.max_epochs,
            "" if cfg.trainer.max_epochs == 1 else "s",
            "averaged" if cfg.final_weights == "average" else "last",
        )
        if cfg.final_weights == "best":
            cfg.final_weights = "last"
    dm: DigitsDataModule = instantiate(cfg.data)
    dm.prepare_data()  # data problems surface before anything else is built or written
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    net = apply_init(instantiate(cfg.model), plain_name(cfg.init))
    precision = auto_precision(cfg.trainer)
    keep_freed_buffers(cfg.trainer)
    module = Classifier(
        net,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        l1=cfg.l1,
        label_smoothing=cfg.label_smoothing,
        seed=cfg.seed,
        channels_last=auto_channels_last(cfg, net, precision),
        compile=cfg.compile,
        config=plain_config(cfg),
    )
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    if logger:
        logger.log_hyperparams(hparams(cfg))  # hparams.yaml holds them from the start; final metrics come at the end
    cbs, extra = _callbacks(cfg, callbacks)
    trainer = instantiate(cfg.trainer, callbacks=cbs, logger=logger, precision=precision, **extra)
    return dm, module, trainer


def _callbacks(cfg: DictConfig, more: list[Callback] | None) -> tuple[list[Callback], dict[str, Any]]:
    """The config's callbacks plus ours, and the Trainer arguments that go with them."""
    cbs = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + list(more or [])
    if cfg.final_weights == "average":
        cbs.append(TailAverage(cfg.average_epochs))
    extra: dict[str, Any] = {}
    if cfg.trainer.get("enable_progress_bar") is False:  # else Lightning refuses the bar callback of our own config
        cbs = [c for c in cbs if not isinstance(c, ProgressBar)]
    if cfg.data.val_fraction == 0:  # nothing to monitor: keep the last-epoch checkpoint and the divergence guard
        cbs = [c for c in cbs if not _monitors_validation(c)]
        extra["limit_val_batches"] = 0
    if cfg.trainer.get("sync_batchnorm") and not on_gpu(cfg.trainer):
        extra["sync_batchnorm"] = False  # SyncBatchNorm needs CUDA; on CPU (gloo) each rank keeps its own statistics
    return cbs, extra


def _monitors_validation(c: Callback) -> bool:
    return isinstance(c, (ModelCheckpoint, EarlyStopping)) and str(getattr(c, "monitor", "") or "").startswith("val/")


# --- running ------------------------------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: RunDir, resume: bool = False) -> RunRecord | None:
    """Fit, then (rank 0) test and record. Raises UserError for user mistakes, Interrupted on SIGINT/SIGTERM."""
    ckpt_path = str(run_dir.last_checkpoint) if resume and run_dir.last_checkpoint.is_file() else None
    rec = RunRecorder()
    dm, module, trainer = build(cfg, callbacks=[rec])
    run_dir.config.write_text(OmegaConf.to_yaml(plain_config(cfg)))
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    got = _fit(trainer, module, dm, ckpt_path)
    if got:
        if trainer.is_global_zero:
            name = signal.Signals(got[-1]).name
            run_dir.write_record(
                RunRecord.interrupted(
                    identity(cfg, run_dir.overrides()), rec.val_acc, rec.epoch_seconds, name, run_dir.path
                )
            )
        raise Interrupted(got[-1])
    if not trainer.is_global_zero:
        return None
    return _finish(cfg, run_dir, dm, module, trainer, rec)


def _fit(trainer: L.Trainer, module: Classifier, dm: DigitsDataModule, ckpt_path: str | None) -> list[int]:
    """trainer.fit with SIGINT/SIGTERM turned into a clean stop; returns the signals that came."""
    with SignalsAsInterrupts() as got:
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit:
            if not got:  # Lightning turns KeyboardInterrupt into sys.exit(1) after its own clean-up
                raise
        except KeyboardInterrupt:
            if not got:  # raised by Python's own SIGINT handler, outside ours
                got.append(signal.SIGINT)
    return got


def _finish(
    cfg: DictConfig, run_dir: RunDir, dm: DigitsDataModule, module: Classifier, trainer: L.Trainer, rec: RunRecorder
) -> RunRecord:
    """predict -> write artifacts -> record -> log."""
    tested = _final_weights(cfg, run_dir, module, trainer)
    preds = predict_splits(dm, module.net)
    run_dir.write_predictions(preds)
    record = _record(cfg, run_dir, dm, trainer, rec, preds, tested)
    if tested == "average":
        record.val_acc_average = val_accuracy(dm, module.net)
    run_dir.write_record(record)
    log_final(trainer, cfg, record, preds)
    log.info("%s -> %s", record.summary_line(), run_dir.metrics)
    return record


def _final_weights(cfg: DictConfig, run_dir: RunDir, module: Classifier, trainer: L.Trainer) -> str:
    """Load the best-validation checkpoint or the averaged weights unless the config keeps the last weights; say
    which were used. The averaged weights are also saved, as average.ckpt, for predict, export and the demo."""
    best = _best_checkpoint(trainer)
    if cfg.final_weights == "best" and best and Path(best).is_file():
        module.load_state_dict(load_checkpoint(best)["state_dict"])
        return "best"
    averager = next((c for c in trainer.callbacks if isinstance(c, TailAverage)), None)
    averaged = averager.average(module.net) if averager is not None else None
    if averaged is not None:
        module.net.load_state_dict(averaged)
        trainer.save_checkpoint(run_dir.average_checkpoint, weights_only=True)
        log.info("tested with the average of the last %d epochs' weights", averager.count)
        return "average"
    if averager is not None:
        log.warning("no epoch of the last %d was reached: tested with the last weights", averager.epochs)
    return "last"


def _best_checkpoint(trainer: L.Trainer) -> str:
    cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    return cb.best_model_path if cb is not None else ""


def _record(
    cfg: DictConfig,
    run_dir: RunDir,
    dm: DigitsDataModule,
    trainer: L.Trainer,
    rec: RunRecorder,
    preds: dict[str, np.ndarray],
    tested: str,
) -> RunRecord:
    assert dm.train is not None and dm.val is not None
    record = RunRecord.from_progress(
        _status(trainer), identity(cfg, run_dir.overrides()), rec.val_acc, rec.epoch_seconds
    )
    record.test_acc, record.test_loss = test_scores(preds)
    record.train_loss_last, record.val_loss_last = _metric(trainer, "train/loss"), _metric(trainer, "val/loss")
    record.data = dm.describe()
    record.device, record.precision = str(dm.train.images.device), str(trainer.precision)
    best = _best_checkpoint(trainer)
    # Both sides resolved: Lightning resolves the checkpoint's path, and a run dir reached through a symlink (an
    # outputs/ that links elsewhere) would otherwise not contain it.
    record.best_checkpoint = str(Path(best).resolve().relative_to(run_dir.path.resolve())) if best else None
    record.tested_weights, record.submission = tested, run_dir.submission.name if run_dir.submission.is_file() else None
    return record


def _status(trainer: L.Trainer) -> str:
    loss = trainer.callback_metrics.get("train/loss")
    if loss is not None and not torch.isfinite(loss).all():
        return "diverged"
    stopped = any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)
    return "early_stopped" if stopped or trainer.should_stop else "completed"


def _metric(trainer: L.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)
