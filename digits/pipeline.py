"""The training pipeline behind `python -m digits.train`: build from config, fit, then predict, write, record, log.

Data flows one way: CSV -> tensors (DigitsDataModule) -> Classifier -> TensorBoard events, checkpoints,
predictions.npz, metrics.json (and submission.csv for an unlabelled test split).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from digits import fingerprint, loggers
from digits.build import build
from digits.callbacks import RunRecorder, SearchPruning, SignalsAsInterrupts, TailAverage
from digits.data.datamodule import DigitsDataModule
from digits.errors import Interrupted, UserError
from digits.evaluate import load_checkpoint, predict_splits, test_scores, val_accuracy
from digits.module import Classifier
from digits.runs import FINISHED, RunDir, RunRecord
from digits.schema import identity, plain_config

log = logging.getLogger("digits.train")


# --- running ------------------------------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: RunDir, resume: bool = False) -> RunRecord | None:
    """Fit, then (rank 0) test and record. Raises UserError for user mistakes, Interrupted on SIGINT/SIGTERM."""
    ckpt_path = str(run_dir.last_checkpoint) if resume and run_dir.last_checkpoint.is_file() else None
    rec = RunRecorder()
    dm, module, trainer = build(cfg, callbacks=[rec])
    log.info("run dir: %s", run_dir.path)  # once the data and the config have passed: a refused run names no dir
    assert module.fingerprint is not None
    stored = run_dir.read_fingerprint()
    if resume and stored is not None:
        fingerprint.check_same(stored, module.fingerprint, run_dir.path)
        if ckpt_path:
            fingerprint.check_checkpoint(stored, load_checkpoint(ckpt_path), Path(ckpt_path))
    elif trainer.is_global_zero:
        run_dir.write_fingerprint(module.fingerprint)
    run_dir.config.write_text(OmegaConf.to_yaml(plain_config(cfg)))
    loggers.start(trainer, cfg)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        got = _fit(trainer, module, dm, ckpt_path)
        if not got:
            with SignalsAsInterrupts() as got:  # a signal while testing and recording stops it as one in fit does
                try:
                    return _finish(cfg, run_dir, dm, module, trainer, rec) if trainer.is_global_zero else None
                except KeyboardInterrupt:
                    if not got:
                        got.append(signal.SIGINT)  # Python's own SIGINT handler, outside ours
    except BaseException:
        loggers.stop(trainer, "failed")
        raise
    loggers.stop(trainer, "interrupted")
    finished = (run_dir.read_record() or {}).get("status") in FINISHED  # recorded just before the signal: kept
    if trainer.is_global_zero and not finished:
        name = signal.Signals(got[-1]).name
        run_dir.write_record(
            RunRecord.interrupted(identity(cfg, run_dir.overrides()), rec.history(), name, run_dir.path)
        )
    raise Interrupted(got[-1])


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
        except MisconfigurationException as e:  # a setting Lightning refuses only once it sees the data
            raise UserError(f"the trainer refused the config: {' '.join(str(e).split())[:300]}") from None
    return got


def _finish(
    cfg: DictConfig, run_dir: RunDir, dm: DigitsDataModule, module: Classifier, trainer: L.Trainer, rec: RunRecorder
) -> RunRecord:
    """predict -> write artifacts -> record -> log."""
    tested, tested_file = _final_weights(cfg, run_dir, module, trainer)
    precision = str(trainer.precision)
    preds = predict_splits(dm, module.net, precision)
    run_dir.write_predictions(preds)
    record = _record(cfg, run_dir, dm, trainer, rec, preds, tested)
    record.tested_checkpoint = str(tested_file.resolve().relative_to(run_dir.path.resolve()))
    if tested == "average":
        record.val_acc_average = val_accuracy(dm, module.net, precision)
    run_dir.write_record(record)
    loggers.finish(trainer, cfg, run_dir, record, preds)
    log.info("%s -> %s", record.summary_line(), run_dir.metrics)
    return record


def _final_weights(cfg: DictConfig, run_dir: RunDir, module: Classifier, trainer: L.Trainer) -> tuple[str, Path]:
    """Load the best-validation checkpoint or the averaged weights unless the config keeps the last weights; return
    which were used and the file that holds them, which the record names for predict, export, the demo and the
    ensemble. Averaged weights are saved as average.ckpt; last weights that no callback saved, as last.ckpt."""
    best = _best_checkpoint(trainer)
    if cfg.final_weights == "best" and best and Path(best).is_file():
        module.load_state_dict(load_checkpoint(best)["state_dict"])
        return "best", Path(best)
    averager = next((c for c in trainer.callbacks if isinstance(c, TailAverage)), None)
    averaged = averager.average(module.net) if averager is not None else None
    if averaged is not None:
        module.net.load_state_dict(averaged)
        trainer.save_checkpoint(run_dir.average_checkpoint, weights_only=True)
        log.info("tested with the average of the last %d epochs' weights", averager.count)
        return "average", run_dir.average_checkpoint
    if averager is not None:
        log.warning("no epoch of the last %d was reached: tested with the last weights", averager.epochs)
    if not _saves_last(trainer):
        trainer.save_checkpoint(run_dir.last_checkpoint, weights_only=True)
    return "last", run_dir.last_checkpoint


def _saves_last(trainer: L.Trainer) -> bool:
    """Whether a callback wrote checkpoints/last.ckpt at the end of the final epoch (the last_checkpoint entry)."""
    return any(isinstance(c, ModelCheckpoint) and c.monitor is None for c in trainer.callbacks)


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
    record = RunRecord.from_progress(_status(trainer), identity(cfg, run_dir.overrides()), rec.history())
    record.test_acc, record.test_loss = test_scores(preds)
    record.train_loss_last, record.val_loss_last = _metric(trainer, "train/loss"), _metric(trainer, "val/loss")
    # A resume of a run whose training had ended (stopped while testing) fits nothing: the last epoch's losses are
    # those its history holds.
    if record.train_loss_last is None and record.train_loss:
        record.train_loss_last = record.train_loss[-1]
    if record.val_loss_last is None and record.val_loss:
        record.val_loss_last = record.val_loss[-1]
    record.data = dm.describe()
    record.device, record.precision = str(dm.train.images.device), str(trainer.precision)
    record.threads = torch.get_num_threads()
    record.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
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
    if any(isinstance(c, SearchPruning) and c.pruned for c in trainer.callbacks):
        return "pruned"
    stopped = any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)
    return "early_stopped" if stopped or trainer.should_stop else "completed"


def _metric(trainer: L.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)
