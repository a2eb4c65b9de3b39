"""The training pipeline behind `python -m digits.train`: build from config, fit, test, record.

Data flows one way: CSV -> tensors (DigitsDataModule) -> Classifier -> TensorBoard events, checkpoints,
predictions.npz, metrics.json (and submission.csv for an unlabelled test split).
"""

from __future__ import annotations

import hashlib
import logging
import signal
import time
import warnings
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

from digits import plots, runs
from digits.cli_args import check_numbers
from digits.data.datamodule import DigitsDataModule
from digits.errors import Interrupted, UserError
from digits.evaluate import load_checkpoint, predict_probs
from digits.models.init import apply_init
from digits.module import Classifier

log = logging.getLogger("digits.train")


class _DropAdverts(logging.Filter):
    """Lightning advertises its cloud products on every run; a log is for the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())
# Lightning 2.6 calls a torch._pytree API that torch 2.13 deprecates; nothing for a user to act on.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
# Nothing is logged per step (metrics are read once per epoch), so Lightning's step-logging interval is moot.
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")


class RunRecorder(Callback):
    """Epoch wall times and validation accuracies, kept in checkpoints so a resumed run continues the record."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.val_acc: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._start)
        acc = trainer.callback_metrics.get("val/acc")
        self.val_acc.append(float(acc) if acc is not None else float("nan"))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_seconds": list(self.epoch_seconds), "val_acc": list(self.val_acc)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))
        self.val_acc = list(state_dict.get("val_acc", []))


def auto_precision(trainer_cfg: DictConfig) -> str:
    """bf16-mixed where the training device is a GPU with bf16, else full fp32."""
    if trainer_cfg.get("precision") is not None:
        return str(trainer_cfg.precision)
    return "bf16-mixed" if _on_gpu(trainer_cfg) and torch.cuda.is_bf16_supported() else "32-true"


def build(cfg: DictConfig, callbacks: list[Callback] | None = None) -> tuple[DigitsDataModule, Classifier, L.Trainer]:
    """The data module, the LightningModule and the Trainer a config describes (used by train and benchmarks)."""
    check_numbers(cfg)
    try:
        return _build(cfg, callbacks)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        text = " ".join(str(e).split())
        raise UserError(f"bad config: {text[:400]}") from None


def auto_batch_size(cfg: DictConfig) -> int:
    """512 on a GPU, where small batches leave it idle waiting for launches; 128 on a CPU, where they don't."""
    if cfg.data.get("batch_size") is not None:
        return int(cfg.data.batch_size)
    return 512 if _on_gpu(cfg.trainer) else 128


def _on_gpu(trainer_cfg: DictConfig) -> bool:
    return trainer_cfg.get("accelerator") in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def _build(cfg: DictConfig, callbacks: list[Callback] | None) -> tuple[DigitsDataModule, Classifier, L.Trainer]:
    cfg.data.batch_size = auto_batch_size(cfg)  # resolved in place, so config.yaml and hparams show the real value
    dm: DigitsDataModule = instantiate(cfg.data)
    dm.prepare_data()  # data problems surface before anything else is built or written
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    net = apply_init(instantiate(cfg.model), cfg.init)
    precision = auto_precision(cfg.trainer)
    channels_last = cfg.channels_last if cfg.channels_last is not None else precision.startswith("bf16")
    module = Classifier(
        net,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        l1=cfg.l1,
        seed=cfg.seed,
        channels_last=bool(channels_last),
        compile=cfg.compile,
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
    )
    cbs = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + list(callbacks or [])
    if cfg.trainer.get("enable_progress_bar") is False:  # else Lightning refuses the bar callback of our own config
        cbs = [c for c in cbs if not isinstance(c, ProgressBar)]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    extra: dict[str, Any] = {}
    if cfg.trainer.get("sync_batchnorm") and not _on_gpu(cfg.trainer):
        extra["sync_batchnorm"] = False  # SyncBatchNorm needs CUDA; on CPU (gloo) each rank keeps its own statistics
    trainer = instantiate(cfg.trainer, callbacks=cbs, logger=logger, precision=precision, **extra)
    return dm, module, trainer


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


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    flat = {
        "model": _choice("model", cfg),
        "optim": _choice("optim", cfg),
        "scheduler": _choice("scheduler", cfg) if cfg.get("scheduler") else "none",
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": cfg.init,
        "l1": cfg.l1,
        "weight_decay": cfg.optim.get("weight_decay", 0.0),
        "momentum": cfg.optim.get("momentum", 0.0),
        "dropout": cfg.model.get("dropout", 0.0),
        "batch_size": cfg.data.batch_size,
        "augment": cfg.data.augment,
        "max_epochs": cfg.trainer.max_epochs,
    }
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat.items()}


def _finish(
    cfg: DictConfig, run_dir: Path, dm: DigitsDataModule, module: Classifier, trainer: L.Trainer, rec: RunRecorder
) -> dict[str, Any]:
    """Test the best checkpoint, write predictions, submission, figures and metrics.json (rank 0 only)."""
    status = _status(trainer)
    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_path = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    net = module.net
    if best_path and Path(best_path).is_file():
        module.load_state_dict(load_checkpoint(best_path)["state_dict"])
    assert dm.train is not None and dm.val is not None
    net.to(dm.train.images.device)
    batch = dm.eval_batch_size
    out: dict[str, np.ndarray] = {}
    if not dm.test_labelled:  # figures then come from validation (Kaggle's test split has no labels)
        val_probs = predict_probs(net, dm.val.images, batch)
        out["val_probs"], out["val_labels"] = val_probs.numpy(), dm.val.labels.cpu().numpy()  # type: ignore[union-attr]
    test_acc = test_loss = None
    submission = None
    if dm.test is not None:
        test_probs = predict_probs(net, dm.test.images, batch)
        out["test_probs"] = test_probs.numpy()
        out["test_fingerprint"] = np.array(_fingerprint(dm.test.images))
        if dm.test.labels is not None:
            labels = dm.test.labels.cpu()
            out["test_labels"] = labels.numpy()
            test_acc = float((test_probs.argmax(1) == labels).float().mean())
            test_loss = float(torch.nn.functional.nll_loss(torch.log(test_probs.clamp_min(1e-12)), labels))
        else:
            submission = run_dir / "submission.csv"
            runs.write_submission(submission, test_probs.argmax(1).numpy())
    split, probs, labels = plots.labelled_split(out)
    if probs is not None and labels is not None:
        # Keep the images of the worst mistakes, so the report can draw them without the data set.
        out["mistake_index"] = plots.top_mistakes(probs, labels)
        images = (dm.test if split == "test" else dm.val).images  # type: ignore[union-attr]
        out["mistake_images"] = images[torch.from_numpy(out["mistake_index"]).to(images.device)].cpu().numpy()
    np.savez_compressed(run_dir / runs.PREDICTIONS, **out)

    epochs = len(rec.epoch_seconds)
    accs = np.array(rec.val_acc, dtype=float)
    best_epoch = int(np.nanargmax(accs)) + 1 if epochs and np.isfinite(accs).any() else None
    metrics = {
        "status": status,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "val_acc_best": float(np.nanmax(accs)) if best_epoch else None,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_seconds": round(float(sum(rec.epoch_seconds)), 3),
        "epoch_seconds": [round(s, 4) for s in rec.epoch_seconds],
        "model": _choice("model", cfg),
        "optim": _choice("optim", cfg),
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": cfg.init,
        "overrides": runs.read_overrides(run_dir),
        "train_loss_last": _metric(trainer, "train/loss"),
        "val_loss_last": _metric(trainer, "val/loss"),
        "data": {
            "dir": str(dm.data_dir),
            "n_train": len(dm.train),
            "n_val": len(dm.val),
            "n_test": len(dm.test) if dm.test is not None else 0,
            "test_labelled": dm.test_labelled,
        },
        "device": str(dm.train.images.device),
        "precision": str(trainer.precision),
        "best_checkpoint": str(Path(best_path).relative_to(run_dir)) if best_path else None,
        "submission": submission.name if submission else None,
    }
    _log_to_tensorboard(trainer, cfg, metrics, out)
    runs.write_json_atomic(run_dir / runs.METRICS, metrics)
    log.info(
        "%s after %d epochs: val_acc_best=%s test_acc=%s -> %s",
        status,
        epochs,
        metrics["val_acc_best"],
        test_acc,
        run_dir / runs.METRICS,
    )
    return metrics


def _metric(trainer: L.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)


def _fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha1(images.cpu().numpy().tobytes()).hexdigest()


def _log_to_tensorboard(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any], preds: dict[str, Any]) -> None:
    """Final metrics in the HParams dashboard, test/acc as a scalar, confusion matrix and mistakes as images."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = trainer.logger
    if not isinstance(logger, TensorBoardLogger):
        return
    final = {"hparams/val_acc_best": metrics["val_acc_best"] or 0.0}
    if metrics["test_acc"] is not None:
        final["hparams/test_acc"] = metrics["test_acc"]
        logger.log_metrics({"test/acc": metrics["test_acc"], "test/loss": metrics["test_loss"]}, trainer.global_step)
    logger.log_hyperparams(_hparams(cfg), final)
    split, probs, labels = plots.labelled_split(preds)
    if probs is not None and labels is not None:
        writer, step = logger.experiment, trainer.global_step
        writer.add_figure(f"{split}/confusion_matrix", plots.confusion_figure(probs, labels, split), step)
        fig = plots.mistakes_figure(probs, labels, preds["mistake_index"], preds["mistake_images"])
        writer.add_figure(f"{split}/misclassified", fig, step)
    logger.finalize("success")


def run(cfg: DictConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Fit, then (rank 0) test and record. Raises UserError for user mistakes, Interrupted on SIGINT/SIGTERM."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _single_log_stream()
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    rec = RunRecorder()
    dm, module, trainer = build(cfg, callbacks=[rec])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    with _signals_as_interrupts() as got:
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit:
            if not got:  # Lightning turns KeyboardInterrupt into sys.exit(1) after its own clean-up
                raise
        except KeyboardInterrupt:
            if not got:  # raised by Python's own SIGINT handler, outside ours
                got.append(signal.SIGINT)
    if got:
        _record_progress(cfg, run_dir, rec, trainer)
        raise Interrupted(got[-1])
    if not trainer.is_global_zero:
        return {}
    return _finish(cfg, run_dir, dm, module, trainer, rec)


def _record_progress(cfg: DictConfig, run_dir: Path, rec: RunRecorder, trainer: L.Trainer) -> None:
    """What an interrupted run had achieved, for its metrics.json (the entry point adds status and resume hint)."""
    if not trainer.is_global_zero:
        return
    accs = [a for a in rec.val_acc if a == a]  # drop NaN (an epoch without validation)
    runs.write_json_atomic(
        run_dir / runs.METRICS,
        {
            "status": "interrupted",
            "epochs": len(rec.epoch_seconds),
            "val_acc_best": max(accs) if accs else None,
            "train_seconds": round(float(sum(rec.epoch_seconds)), 3),
            "model": _choice("model", cfg),
            "optim": _choice("optim", cfg),
            "lr": cfg.lr,
            "seed": cfg.seed,
            "overrides": runs.read_overrides(run_dir),
        },
    )


def _single_log_stream() -> None:
    """`import lightning` gives its top logger a console handler of its own; under Hydra, whose root handlers print
    and write train.log, that prints every Lightning record twice. Let the root handlers have them alone."""
    if logging.getLogger().handlers:
        top = logging.getLogger("lightning")
        for handler in list(top.handlers):
            top.removeHandler(handler)


class _signals_as_interrupts:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt) while training; remember which signal came."""

    def __enter__(self) -> list[int]:
        self.got: list[int] = []

        def handler(signum: int, _frame: object) -> None:
            self.got.append(signum)
            raise KeyboardInterrupt

        self.previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self.got

    def __exit__(self, *exc: object) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
