"""The typed schema of the training config: the one place that says what each key may hold.

Each dataclass is a Hydra structured config in the ConfigStore: `conf/train.yaml` builds on `TrainConf`, and each group
file names its schema in its defaults (`/schema/optim/sgd@_here_`). Composition then refuses a wrong type or an
unknown key (`lr=fast`, `trainer.max_epoch=1`) before any run dir exists. Ranges are field metadata, checked by
`check()` on the composed config: `lr=-1`, `seed=-1` or `model.dropout=2` fail in one line, also before anything is
written. This module imports no torch, so the command line is checked in well under a second.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from digits.errors import UserError

SEED_MAX = 2**32 - 1  # Lightning's seed_everything (and numpy's legacy seeding) accept 0 .. 2**32 - 1


class Init(str, Enum):
    """Weight initialisation schemes the report discusses (see digits/models/init.py)."""

    default = "default"
    normal = "normal"
    xavier = "xavier"
    kaiming = "kaiming"
    zeros = "zeros"


class FinalWeights(str, Enum):
    """Which weights are tested and predicted with: the best validation checkpoint, the last weights, or the mean of
    the last `average_epochs` epochs' weights."""

    best = "best"
    last = "last"
    average = "average"


def rule(default: Any, **limits: Any) -> Any:
    """A field with range limits: gt, ge, lt, le (numbers), items_ge / items_lt (each list item), length (a list's
    exact length), what (a label)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=limits)
    return field(default=default, metadata=limits)


# --- the top level ------------------------------------------------------------------------------------------------
@dataclass
class TrainConf:
    lr: float = rule(0.1, gt=0, what="the learning rate")
    seed: int = rule(0, ge=0, le=SEED_MAX, what="the seed")
    init: Init = Init.default
    l1: float = rule(0.0, ge=0, what="the L1 coefficient")
    label_smoothing: float = rule(0.0, ge=0, lt=1, what="label smoothing")
    final_weights: FinalWeights = FinalWeights.best
    average_epochs: int = rule(10, ge=1, what="the last epochs whose weights final_weights=average averages")
    compile: bool = False
    channels_last: bool | None = None
    resume: str | None = None
    paths: Any = None
    model: Any = None
    optim: Any = None
    scheduler: Any = None
    data: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class DataConf:
    _target_: str = "digits.data.DigitsDataModule"
    dir: str | None = None
    root: str = "data/mnist"
    val_fraction: float = rule(0.1, ge=0, lt=1, what="the validation fraction")
    batch_size: int | None = rule(None, ge=1)
    eval_batch_size: int = rule(1000, ge=1)
    seed: int = rule(0, ge=0, le=SEED_MAX)
    split_seed: int | None = rule(None, ge=0, le=SEED_MAX, what="the split's seed")
    augment: bool = False
    rotate: float = rule(12.0, ge=0, le=180, what="degrees")
    translate: float = rule(2.0, ge=0, le=14, what="pixels")
    zoom: float = rule(0.0, ge=0, lt=1, what="relative scale change")
    elastic: float = rule(0.0, ge=0, le=100, what="pixels of displacement")
    elastic_sigma: float = rule(6.0, gt=0, le=14, what="pixels, the smoothing Gaussian's width")
    on_device: bool = True


# --- models -------------------------------------------------------------------------------------------------------
@dataclass
class ModelConf:
    _target_: str = ""
    num_classes: int = rule(10, ge=2)
    dropout: float = rule(0.0, ge=0, lt=1, what="a probability")


@dataclass
class OriginalConf(ModelConf):
    channels: list[int] = rule([32, 64, 128], items_ge=1, length=3, what="the three stages' widths")
    hidden: int = rule(100, ge=1, what="the fully connected layer's width")


@dataclass
class ANNConf(ModelConf):
    hidden: list[int] = rule([512, 256], items_ge=1, what="layer widths")


# --- optimizers and schedules -------------------------------------------------------------------------------------
@dataclass
class SGDConf:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = rule(0.1, gt=0)
    momentum: float = rule(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = rule(0.0, ge=0)


@dataclass
class AdamConf:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = rule(0.001, gt=0)
    betas: list[float] = rule([0.9, 0.999], items_ge=0, items_lt=1)
    weight_decay: float = rule(0.0, ge=0)


@dataclass
class OneCycleConf:
    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    _partial_: bool = True
    max_lr: float = rule(0.1, gt=0)
    pct_start: float = rule(0.25, gt=0, lt=1)
    anneal_strategy: str = "linear"
    cycle_momentum: bool = False
    base_momentum: float = rule(0.85, ge=0, lt=1)
    max_momentum: float = rule(0.95, ge=0, lt=1)


@dataclass
class CosineConf:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    eta_min: float = rule(0.0, ge=0)


# --- the Lightning Trainer: the arguments this project exposes (add one here and in conf/trainer/default.yaml) ----
@dataclass
class TrainerConf:
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = rule(1, ge=1)
    strategy: Any = "auto"
    sync_batchnorm: bool = False
    precision: Any = None
    max_epochs: int = rule(50, ge=1, what="epochs")
    min_epochs: int | None = rule(None, ge=0)
    max_time: Any = None
    num_sanity_val_steps: int = rule(0, ge=-1)
    log_every_n_steps: int = rule(50, ge=1)
    enable_model_summary: bool = False
    enable_progress_bar: bool = True
    deterministic: Any = False
    limit_train_batches: Any = rule(None, gt=0)
    limit_val_batches: Any = rule(None, ge=0)
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = rule(1, ge=1)
    accumulate_grad_batches: int = rule(1, ge=1)
    gradient_clip_val: float | None = rule(None, ge=0)
    benchmark: bool | None = None


def job_dir_name(num: Any, varied: str) -> str:
    """A sweep job's dir: its number, then what it varies (`3_lr=0.01,optim=adam`); '/' in a value would nest."""
    return f"{num}_{varied.replace('/', '%')}" if varied else str(num)


def slurm_gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per SLURM job: the trainer's devices when it trains on GPUs, else none (a CPU partition refuses a GPU
    request outright)."""
    if str(accelerator) not in ("gpu", "cuda"):
        return None
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, ListConfig)):
        return len(devices) or 1
    return 1


def register() -> None:
    """Put the schemas in Hydra's ConfigStore and our resolvers in OmegaConf (idempotent; done on import)."""
    OmegaConf.register_new_resolver("digits_job_dir", job_dir_name, replace=True)
    OmegaConf.register_new_resolver("digits_slurm_gpus", slurm_gpus, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=TrainConf)
    cs.store(group="schema/data", name="default", node=DataConf)
    cs.store(group="schema/model", name="cnn", node=ModelConf)
    cs.store(group="schema/model", name="original", node=OriginalConf)
    cs.store(group="schema/model", name="ann", node=ANNConf)
    cs.store(group="schema/optim", name="sgd", node=SGDConf)
    cs.store(group="schema/optim", name="adam", node=AdamConf)
    cs.store(group="schema/scheduler", name="onecycle", node=OneCycleConf)
    cs.store(group="schema/scheduler", name="cosine", node=CosineConf)
    cs.store(group="schema/trainer", name="default", node=TrainerConf)


register()


# --- reading a composed config ---------------------------------------------------------------------------------
def choice(group: str, cfg: DictConfig) -> str:
    """The choice a group was composed from (`original`, `sgd`), or its class name outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().runtime.choices.get(group))
    except ValueError:
        return str(cfg[group]["_target_"]).rsplit(".", 1)[-1]


def plain_name(value: Any) -> str:
    """An enum-typed value (init, final_weights) as its plain name."""
    return str(getattr(value, "value", value))


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain values (enums as their names): what checkpoints and config.yaml hold."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def identity(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """What a run is, for its record: the choices and numbers a summary sorts and filters by."""
    return {
        "model": choice("model", cfg),
        "optim": choice("optim", cfg),
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": plain_name(cfg.init),
        "overrides": overrides,
    }


# --- range checks -------------------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_OPS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def _violation(value: Any, limits: dict[str, Any]) -> str | None:
    """What is wrong with value under limits, or None."""
    if value is None:
        return None
    if isinstance(value, (list, ListConfig)):
        if "length" in limits and len(value) != limits["length"]:
            return f"must have {limits['length']} items"
        item_limits = {k[len("items_") :]: v for k, v in limits.items() if k.startswith("items_")}
        bad = next((b for b in (_violation(item, item_limits) for item in value) if b), None)
        return f"each item {bad}" if bad else None
    bounds = [(k, v) for k, v in limits.items() if k in _OPS]
    if not bounds:
        return None
    if not _is_number(value):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    if all(_OPS[k][0](value, b) for k, b in bounds):
        return None
    return "must be " + " and ".join(f"{_OPS[k][1]} {b}" for k, b in bounds)


def check(cfg: DictConfig, prefix: str = "") -> None:
    """Raise a one-line UserError for the first value outside its field's range, naming the full key."""
    kind = OmegaConf.get_type(cfg)
    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        return
    for f in dataclasses.fields(kind):
        key = f"{prefix}{f.name}"
        node = cfg._get_node(f.name)
        if isinstance(node, DictConfig):
            check(node, key + ".")
            continue
        value = cfg[f.name]
        bad = _violation(value, dict(f.metadata))
        if bad:
            what = f" ({f.metadata['what']})" if "what" in f.metadata else ""
            raise UserError(f"{key}={_show(value)}: {bad}{what}")


def _show(value: Any) -> str:
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    return str(value)
