"""Build a run from its config: the DataModule, the LightningModule around a registry model, the Trainer and its
callbacks (used by digits.pipeline and the benchmarks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar
from omegaconf import DictConfig

from digits import fingerprint, models, search
from digits.callbacks import SearchPruning, TailAverage, follow_the_run_dir
from digits.data.datamodule import DigitsDataModule
from digits.devices import auto_batch_size, auto_channels_last, auto_precision, keep_freed_buffers, on_gpu
from digits.errors import UserError
from digits.loggers import build_loggers
from digits.models.init import apply_init
from digits.module import Classifier
from digits.schema import plain_config, plain_name

log = logging.getLogger("digits.train")


def build(cfg: DictConfig, callbacks: list[Callback] | None = None) -> tuple[DigitsDataModule, Classifier, L.Trainer]:
    """The data module, the LightningModule and the Trainer a config describes (used by train and benchmarks)."""
    try:
        return _build(cfg, callbacks)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        # Hydra's text repeats the target's path and ends with the key: say the key, then the cause in its own words.
        import re

        key = re.search(r"full_key: (\S+)", str(e))
        cause = e.__cause__ if e.__cause__ is not None else e
        text = " ".join(f"{type(cause).__name__}: {cause}".split())[:300]
        raise UserError(f"bad config: {key.group(1) + ': ' if key else ''}{text}") from None


def _build(cfg: DictConfig, callbacks: list[Callback] | None) -> tuple[DigitsDataModule, Classifier, L.Trainer]:
    start = plain_config(cfg)  # the config as composed, before the run fills in what it leaves open
    for key in ("dir", "root"):  # absolute, so every tool reads the run's own data from any working directory
        if cfg.data.get(key):
            cfg.data[key] = str(Path(cfg.data[key]).absolute())
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
    identity_ = fingerprint.of_run(start, dm.data_dir)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    net = apply_init(models.build(cfg.model), plain_name(cfg.init))
    precision = auto_precision(cfg.trainer)
    cfg.trainer.precision = precision  # in place: checkpoints then tell every tool the precision to evaluate in
    cfg.channels_last = auto_channels_last(cfg, net, precision)  # in place too: the memory format tools evaluate in
    keep_freed_buffers(cfg.trainer)
    module = Classifier(
        net,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        l1=cfg.l1,
        label_smoothing=cfg.label_smoothing,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        config=plain_config(cfg),
        fingerprint=identity_,
    )
    loggers = build_loggers(cfg)  # an MLflow server that does not answer stops the run here, before anything is written
    cbs, extra = _callbacks(cfg, callbacks)
    trainer = instantiate(cfg.trainer, callbacks=cbs, logger=loggers or False, precision=precision, **extra)
    return dm, module, trainer


def _callbacks(cfg: DictConfig, more: list[Callback] | None) -> tuple[list[Callback], dict[str, Any]]:
    """The config's callbacks plus ours, and the Trainer arguments that go with them."""
    entries = {k: c for k, c in cfg.callbacks.items() if k != "extra" and c is not None}
    entries.update({f"extra.{k}": c for k, c in (cfg.callbacks.get("extra") or {}).items() if c is not None})
    cbs = [_callback(name, c) for name, c in entries.items()] + list(more or [])
    if cfg.final_weights == "average":
        cbs.append(TailAverage(cfg.average_epochs))
    trial = search.trial_from_env()  # a job of hydra/sweeper=search reports to its trial, which may prune it
    if trial is not None:
        cbs.append(SearchPruning(trial))
    extra: dict[str, Any] = {}
    if cfg.trainer.get("enable_progress_bar") is False:  # else Lightning refuses the bar callback of our own config
        cbs = [c for c in cbs if not isinstance(c, ProgressBar)]
    if cfg.data.val_fraction == 0:  # nothing to monitor: keep the last-epoch checkpoint and the divergence guard
        cbs = [c for c in cbs if not _monitors_validation(c)]
        extra["limit_val_batches"] = 0
    if cfg.trainer.get("sync_batchnorm") and not on_gpu(cfg.trainer):
        extra["sync_batchnorm"] = False  # SyncBatchNorm needs CUDA; on CPU (gloo) each rank keeps its own statistics
    return cbs, extra


def _callback(name: str, c: Any) -> Callback:
    made = instantiate(c)
    if not isinstance(made, Callback):
        raise UserError(f"callbacks.{name} builds a {type(made).__name__}, not a lightning Callback")
    return follow_the_run_dir(made) if isinstance(made, ModelCheckpoint) else made


def _monitors_validation(c: Callback) -> bool:
    return isinstance(c, (ModelCheckpoint, EarlyStopping)) and str(getattr(c, "monitor", "") or "").startswith("val/")
