"""The training pipeline behind `python -m digits.train`: build from config, fit, then predict, write, record, log.

Data flows one way: CSV -> tensors (DigitsDataModule) -> Classifier -> TensorBoard events, checkpoints,
predictions.npz, metrics.json (and submission.csv for an unlabelled test split).
"""

from __future__ import annotations

import hashlib
import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from digits import plots
from digits.callbacks import RunRecorder, SignalsAsInterrupts
from digits.data.datamodule import DigitsDataModule
from digits.errors import Interrupted, UserError
from digits.evaluate import load_checkpoint, predict_probs
from digits.models.init import apply_init
from digits.module import Classifier
from digits.runs import RunDir, RunRecord

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
    no_val = cfg.data.val_fraction == 0
    if no_val:
        log.info(
            "data.val_fraction=0: training on every labelled row for %d epochs; no validation, no early "
            "stopping, the last weights are kept",
            cfg.trainer.max_epochs,
        )
        cfg.final_weights = "last"
    dm: DigitsDataModule = instantiate(cfg.data)
    dm.prepare_data()  # data problems surface before anything else is built or written
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    net = apply_init(instantiate(cfg.model), _name(cfg.init))
    precision = auto_precision(cfg.trainer)
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
    cbs = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + list(callbacks or [])
    if cfg.trainer.get("enable_progress_bar") is False:  # else Lightning refuses the bar callback of our own config
        cbs = [c for c in cbs if not isinstance(c, ProgressBar)]
    extra: dict[str, Any] = {}
    if no_val:  # nothing to monitor: keep the last-epoch checkpoint and the divergence guard only
        cbs = [c for c in cbs if not _monitors_validation(c)]
        extra["limit_val_batches"] = 0
    if cfg.trainer.get("sync_batchnorm") and not _on_gpu(cfg.trainer):
        extra["sync_batchnorm"] = False  # SyncBatchNorm needs CUDA; on CPU (gloo) each rank keeps its own statistics
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    if logger:
        logger.log_hyperparams(hparams(cfg))  # hparams.yaml holds them from the start; final metrics come at the end
    trainer = instantiate(cfg.trainer, callbacks=cbs, logger=logger, precision=precision, **extra)
    return dm, module, trainer


def _monitors_validation(c: Callback) -> bool:
    return isinstance(c, (ModelCheckpoint, EarlyStopping)) and str(getattr(c, "monitor", "") or "").startswith("val/")


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain values (enums as their names): what checkpoints and config.yaml hold."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def auto_precision(trainer_cfg: DictConfig) -> str:
    """bf16-mixed where the training device is a GPU with bf16, else full fp32 (bf16 is far slower on most CPUs)."""
    if trainer_cfg.get("precision") is not None:
        return str(trainer_cfg.precision)
    return "bf16-mixed" if _on_gpu(trainer_cfg) and torch.cuda.is_bf16_supported() else "32-true"


def auto_batch_size(cfg: DictConfig) -> int:
    """512 on a GPU, where small batches leave it idle waiting for launches; 128 on a CPU, where they don't."""
    if cfg.data.get("batch_size") is not None:
        return int(cfg.data.batch_size)
    return 512 if _on_gpu(cfg.trainer) else 128


def auto_channels_last(cfg: DictConfig, net: torch.nn.Module, precision: str) -> bool:
    """On GPUs with bf16, always; on CPUs where the architecture says it is faster there (measured per model)."""
    if cfg.get("channels_last") is not None:
        return bool(cfg.channels_last)
    if _on_gpu(cfg.trainer):
        return precision.startswith("bf16")
    return bool(getattr(net, "channels_last_on_cpu", False))


def _on_gpu(trainer_cfg: DictConfig) -> bool:
    return trainer_cfg.get("accelerator") in ("auto", "gpu", "cuda") and torch.cuda.is_available()


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
                RunRecord.interrupted(identity(cfg, run_dir), rec.val_acc, rec.epoch_seconds, name, run_dir.path)
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
    tested = _final_weights(cfg, module, trainer)
    preds = predict(dm, module.net)
    _write_artifacts(run_dir, dm, preds)
    record = _record(cfg, run_dir, dm, trainer, rec, preds, tested)
    run_dir.write_record(record)
    _log_to_tensorboard(trainer, cfg, record, preds)
    log.info(
        "%s after %d epochs: val %s (best, epoch %s), test %s with the %s weights -> %s",
        record.status,
        record.epochs,
        _percent(record.val_acc_best),
        record.best_epoch,
        _percent(record.test_acc),
        tested,
        run_dir.metrics,
    )
    return record


def _final_weights(cfg: DictConfig, module: Classifier, trainer: L.Trainer) -> str:
    """Load the best-validation checkpoint unless the config keeps the last weights; say which were used."""
    best = _best_checkpoint(trainer)
    if cfg.final_weights == "best" and best and Path(best).is_file():
        module.load_state_dict(load_checkpoint(best)["state_dict"])
        return "best"
    return "last"


def _best_checkpoint(trainer: L.Trainer) -> str:
    cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    return cb.best_model_path if cb is not None else ""


def predict(dm: DigitsDataModule, net: torch.nn.Module) -> dict[str, np.ndarray]:
    """Softmax on the test split (and on validation when the test split is unlabelled, for the figures), with the
    images of the worst mistakes, so the report can draw them without the data."""
    assert dm.train is not None and dm.val is not None
    net.to(dm.train.images.device)
    out: dict[str, np.ndarray] = {}
    if not dm.test_labelled and len(dm.val):
        out["val_probs"] = predict_probs(net, dm.val.images, dm.eval_batch_size).numpy()
        out["val_labels"] = dm.val.labels.cpu().numpy()  # type: ignore[union-attr]
    if dm.test is not None:
        out["test_probs"] = predict_probs(net, dm.test.images, dm.eval_batch_size).numpy()
        out["test_fingerprint"] = np.array(hashlib.sha1(dm.test.images.cpu().numpy().tobytes()).hexdigest())
        if dm.test.labels is not None:
            out["test_labels"] = dm.test.labels.cpu().numpy()
    split, probs, labels = plots.labelled_split(out)
    if probs is not None and labels is not None:
        out["mistake_index"] = plots.top_mistakes(probs, labels)
        images = (dm.test if split == "test" else dm.val).images  # type: ignore[union-attr]
        out["mistake_images"] = images[torch.from_numpy(out["mistake_index"]).to(images.device)].cpu().numpy()
    return out


def _write_artifacts(run_dir: RunDir, dm: DigitsDataModule, preds: dict[str, np.ndarray]) -> None:
    from digits.runs import write_submission

    np.savez_compressed(run_dir.predictions, **preds)
    if "test_probs" in preds and "test_labels" not in preds:
        write_submission(run_dir.submission, preds["test_probs"].argmax(1))


def _test_scores(preds: dict[str, np.ndarray]) -> tuple[float | None, float | None]:
    if "test_labels" not in preds:
        return None, None
    probs, labels = torch.from_numpy(preds["test_probs"]), torch.from_numpy(preds["test_labels"])
    acc = float((probs.argmax(1) == labels).float().mean())
    loss = float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), labels))
    return acc, loss


def identity(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """What a run is, for its record: the choices and numbers a summary sorts and filters by."""
    return {
        "model": _choice("model", cfg),
        "optim": _choice("optim", cfg),
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": _name(cfg.init),
        "overrides": run_dir.overrides(),
    }


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
    record = RunRecord.from_progress(_status(trainer), identity(cfg, run_dir), rec.val_acc, rec.epoch_seconds)
    record.test_acc, record.test_loss = _test_scores(preds)
    record.train_loss_last, record.val_loss_last = _metric(trainer, "train/loss"), _metric(trainer, "val/loss")
    record.data = {
        "dir": str(dm.data_dir),
        "n_train": len(dm.train),
        "n_val": len(dm.val),
        "n_test": len(dm.test) if dm.test is not None else 0,
        "test_labelled": dm.test_labelled,
    }
    record.device, record.precision = str(dm.train.images.device), str(trainer.precision)
    best = _best_checkpoint(trainer)
    record.best_checkpoint = str(Path(best).relative_to(run_dir.path)) if best else None
    record.tested_weights = tested
    record.submission = run_dir.submission.name if run_dir.submission.is_file() else None
    return record


def _status(trainer: L.Trainer) -> str:
    loss = trainer.callback_metrics.get("train/loss")
    if loss is not None and not torch.isfinite(loss).all():
        return "diverged"
    stopped = any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)
    return "early_stopped" if stopped or trainer.should_stop else "completed"


def _choice(group: str, cfg: DictConfig) -> str:
    try:
        return str(HydraConfig.get().runtime.choices.get(group))
    except ValueError:
        return str(cfg[group]["_target_"]).rsplit(".", 1)[-1]


def _name(value: Any) -> str:
    """An enum-typed config value (init, final_weights) as its plain name."""
    return str(getattr(value, "value", value))


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _metric(trainer: L.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)


# --- TensorBoard --------------------------------------------------------------------------------------------------
def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The knobs a comparison filters by, as they ran (a cycled momentum says so)."""
    sched = cfg.get("scheduler") or {}
    momentum = cfg.optim.get("momentum", (cfg.optim.get("betas") or [0.0])[0])
    if sched.get("cycle_momentum"):
        momentum = f"cycled {sched.base_momentum}-{sched.max_momentum}"
    flat = {
        "model": _choice("model", cfg),
        "optim": _choice("optim", cfg),
        "scheduler": _choice("scheduler", cfg) if sched else "none",
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": _name(cfg.init),
        "l1": cfg.l1,
        "weight_decay": cfg.optim.get("weight_decay", 0.0),
        "momentum": momentum,
        "label_smoothing": cfg.label_smoothing,
        "dropout": cfg.model.get("dropout", 0.0),
        "batch_size": cfg.data.batch_size,
        "augment": cfg.data.augment,
        "max_epochs": cfg.trainer.max_epochs,
        "final_weights": _name(cfg.final_weights),
    }
    return {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in flat.items()}


def _log_to_tensorboard(trainer: L.Trainer, cfg: DictConfig, record: RunRecord, preds: dict[str, Any]) -> None:
    """Final metrics in the HParams dashboard, test/acc at the last epoch, confusion matrix and mistakes."""
    from lightning.pytorch.loggers import TensorBoardLogger

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
