"""The typed schema of the training config: the one place that says what each key may hold.

Each dataclass is a Hydra structured config in the ConfigStore: `conf/train.yaml` builds on `TrainConf`, and each group
file names its schema in its defaults (`/schema/optim/sgd@_here_`). Composition then refuses a wrong type or an
unknown key (`lr=fast`, `trainer.max_epoch=1`) before any run dir exists. Ranges are field metadata, checked by
`check()` on the composed config: `lr=-1`, `seed=-1` or `model.dropout=2` fail in one line, also before anything is
written. This module imports no torch, so the command line is checked in well under a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from digits.cache import data_home
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
    """A field with limits, checked by validate() on the resolved config: gt, ge, lt, le (numbers), items_ge /
    items_lt (each list item), length (a list's exact length), choices (the values allowed), fixed (the only text
    the key may hold, unresolved), required (never null or removed), empty_ok (a string may be empty), what (a
    label)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=limits)
    return field(default=default, metadata=limits)


def target(name: str) -> Any:
    """A `_target_` that may only be `name`: the class is the group's, and what it builds is this project's."""
    return rule(name, choices=[name])


# --- the top level ------------------------------------------------------------------------------------------------
# Keys whose text the run dir owns: a config may not move checkpoints, event files or the run dir itself elsewhere
# (digits.runs.RunDir spells every path inside a run dir, and every tool reads them there).
RUN_DIR = "${hydra:runtime.output_dir}"


@dataclass
class PathsConf:
    output_dir: str = rule(RUN_DIR, fixed=RUN_DIR, what="the run dir, chosen by hydra.run.dir")


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
    paths: PathsConf = field(default_factory=PathsConf)
    model: Any = rule(None, required=True)
    optim: Any = rule(None, required=True)
    scheduler: Any = None
    data: Any = rule(None, required=True)
    trainer: Any = rule(None, required=True)
    callbacks: Any = rule(None, required=True)
    logger: LoggerConf = field(default_factory=lambda: LoggerConf())  # defined with the loggers below


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class DataConf:
    _target_: str = target("digits.data.DigitsDataModule")
    dir: str | None = rule(None, what="a folder holding train.csv")
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


# --- models: digits.models.REGISTRY names the architectures a `_target_` may be -------------------------------------
MODEL_TARGETS = [
    "digits.models.original.OriginalCNN",
    "digits.models.lenet.LeNet5",
    "digits.models.alexnet.AlexNet",
    "digits.models.ann.ANN",
    "digits.models.deotte.DeotteCNN",
]  # digits.models.REGISTRY holds the same names, checked when it is imported


@dataclass
class ModelConf:
    _target_: str = rule("", choices=MODEL_TARGETS, what="an architecture of digits.models")
    num_classes: int = rule(10, choices=[10], what="the digits 0-9")
    dropout: float = rule(0.0, ge=0, lt=1, what="a probability")


@dataclass
class OriginalConf(ModelConf):
    # Widths are bounded where a network still fits in memory: 1,024 channels make the third stage ~10M weights,
    # a hidden width of 8,192 ~9M; one more digit asks for gigabytes.
    channels: list[int] = rule([32, 64, 128], items_ge=1, items_le=1024, length=3, what="the three stages' widths")
    hidden: int = rule(100, ge=1, le=8192, what="the fully connected layer's width")


@dataclass
class ANNConf(ModelConf):
    hidden: list[int] = rule([512, 256], items_ge=1, items_le=8192, what="layer widths")


def model_schema(target: str) -> type:
    """The schema of an architecture's keys, by its `_target_`."""
    return {"digits.models.original.OriginalCNN": OriginalConf, "digits.models.ann.ANN": ANNConf}.get(target, ModelConf)


# --- optimizers and schedules: their rate is the top-level `lr`, so the recorded rate is the one that trained -----
LR = "${lr}"


@dataclass
class SGDConf:
    _target_: str = target("torch.optim.SGD")
    _partial_: bool = rule(True, choices=[True])
    lr: float = rule(LR, fixed=LR, what="set by the top-level lr")
    momentum: float = rule(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = rule(0.0, ge=0)


@dataclass
class AdamConf:
    _target_: str = rule("torch.optim.Adam", choices=["torch.optim.Adam", "torch.optim.AdamW"])
    _partial_: bool = rule(True, choices=[True])
    lr: float = rule(LR, fixed=LR, what="set by the top-level lr")
    betas: list[float] = rule([0.9, 0.999], items_ge=0, items_lt=1, length=2, what="(beta1, beta2)")
    weight_decay: float = rule(0.0, ge=0)


@dataclass
class OneCycleConf:
    _target_: str = target("torch.optim.lr_scheduler.OneCycleLR")
    _partial_: bool = rule(True, choices=[True])
    max_lr: float = rule(LR, fixed=LR, what="set by the top-level lr")
    pct_start: float = rule(0.25, gt=0, lt=1)
    anneal_strategy: str = rule("linear", choices=["linear", "cos"])
    cycle_momentum: bool = False
    base_momentum: float = rule(0.85, ge=0, lt=1)
    max_momentum: float = rule(0.95, ge=0, lt=1)


@dataclass
class CosineConf:
    _target_: str = target("torch.optim.lr_scheduler.CosineAnnealingLR")
    _partial_: bool = rule(True, choices=[True])
    eta_min: float = rule(0.0, ge=0)


# --- the Lightning Trainer: the arguments this project exposes (add one here and in conf/trainer/default.yaml) ----
PRECISIONS = [None, "32-true", "32", 32, "bf16-mixed", "bf16", "16-mixed", "16", 16, "bf16-true", "64-true", "64", 64]


@dataclass
class TrainerConf:
    _target_: str = target("lightning.pytorch.Trainer")
    accelerator: str = rule("auto", choices=["auto", "cpu", "gpu", "cuda", "mps"])
    devices: Any = 1
    num_nodes: int = rule(1, ge=1)
    strategy: str = rule("auto", choices=["auto", "ddp", "ddp_find_unused_parameters_true"])
    sync_batchnorm: bool = False
    precision: Any = rule(None, choices=PRECISIONS)
    max_epochs: int = rule(50, ge=1, what="epochs")
    min_epochs: int | None = rule(None, ge=0)
    max_time: Any = None
    num_sanity_val_steps: int = rule(0, ge=-1)
    log_every_n_steps: int = rule(50, ge=1)
    enable_model_summary: bool = False
    enable_progress_bar: bool = True
    deterministic: Any = rule(False, choices=[False, True, "warn"])
    limit_train_batches: Any = rule(None, gt=0)
    limit_val_batches: Any = rule(None, gt=0, what="use data.val_fraction=0 to train without validation")
    val_check_interval: float | None = rule(
        None,
        choices=[None, 1.0],
        what="validation runs once per epoch: records, curves and early stopping are per epoch",
    )
    check_val_every_n_epoch: int | None = rule(1, ge=1)
    accumulate_grad_batches: int = rule(1, ge=1)
    gradient_clip_val: float | None = rule(None, ge=0)
    benchmark: bool | None = None


# --- callbacks: the checkpoints' place and names belong to the run dir; monitors name metrics the module logs ----
METRICS = ["val/acc", "val/loss", "train/acc", "train/loss"]
CHECKPOINTS = "${paths.output_dir}/checkpoints"


@dataclass
class CheckpointConf:
    _target_: str = target("lightning.pytorch.callbacks.ModelCheckpoint")
    dirpath: str = rule(CHECKPOINTS, fixed=CHECKPOINTS, what="the run dir's checkpoints/")
    save_top_k: int = rule(1, choices=[1], what="one file")
    save_on_train_epoch_end: bool = True


@dataclass
class BestCheckpointConf(CheckpointConf):
    filename: str = rule("best", choices=["best"], what="the tools read checkpoints/best.ckpt")
    monitor: str = rule("val/acc", choices=METRICS)
    mode: str = rule("max", choices=["max", "min"])
    auto_insert_metric_name: bool = False


@dataclass
class LastCheckpointConf(CheckpointConf):
    filename: str = rule("last", choices=["last"], what="a resume reads checkpoints/last.ckpt")
    monitor: str | None = rule(None, choices=[None], what="written every epoch, whatever its score")
    enable_version_counter: bool = rule(False, choices=[False], what="one last.ckpt, replaced each epoch")


@dataclass
class EarlyStoppingConf:
    _target_: str = target("lightning.pytorch.callbacks.EarlyStopping")
    monitor: str = rule("val/acc", choices=METRICS)
    mode: str = rule("max", choices=["max", "min"])
    patience: int = rule(10, ge=0, what="epochs without a new best")
    min_delta: float = rule(0.0, ge=0)
    check_finite: bool = True
    check_on_train_epoch_end: bool = True


@dataclass
class ProgressBarConf:
    _target_: str = target("lightning.pytorch.callbacks.TQDMProgressBar")
    refresh_rate: int = rule(20, ge=1)


@dataclass
class CallbacksConf:
    model_checkpoint: BestCheckpointConf | None = field(default_factory=BestCheckpointConf)
    last_checkpoint: LastCheckpointConf | None = field(default_factory=LastCheckpointConf)
    early_stopping: EarlyStoppingConf | None = field(default_factory=EarlyStoppingConf)
    divergence: EarlyStoppingConf | None = field(default_factory=EarlyStoppingConf)
    progress_bar: ProgressBarConf | None = field(default_factory=ProgressBarConf)
    # Callbacks of your own: `+callbacks.extra.NAME={_target_: my.module.MyCallback, ...}`; each must build a
    # lightning Callback (checked when the run builds them). The entries above are this project's, typed.
    extra: dict[str, Any] = field(default_factory=dict)


# --- loggers: each writes where the run dir says; several at once with logger=many or logger=[tensorboard,mlflow] ---
OUTPUT_DIR = "${paths.output_dir}"


@dataclass
class TensorBoardConf:
    _target_: str = target("digits.loggers.tensorboard.EpochTensorBoardLogger")
    save_dir: str = rule(OUTPUT_DIR, fixed=OUTPUT_DIR, what="event files live in the run dir")
    name: str = rule("", choices=[""], empty_ok=True, what="event files directly in the run dir")
    version: str = rule("", choices=[""], empty_ok=True, what="event files directly in the run dir")
    default_hp_metric: bool = False


@dataclass
class CSVConf:
    _target_: str = target("digits.loggers.csv_file.EpochCSVLogger")
    save_dir: str = rule(OUTPUT_DIR, fixed=OUTPUT_DIR, what="csv/metrics.csv lives in the run dir")


@dataclass
class MLflowConf:
    _target_: str = target("digits.loggers.mlflow_run.EpochMLFlowLogger")
    run_dir: str = rule(OUTPUT_DIR, fixed=OUTPUT_DIR, what="one MLflow run per run dir, named after it")
    tracking_uri: str | None = rule(None, what="an MLflow tracking URI; null: sqlite:///outputs/mlflow.db")
    experiment_name: str | None = rule(None, what="null: the experiment config's name, else the sweep dir's")
    tags: dict[str, str] = field(default_factory=dict)
    log_checkpoint: bool = False
    log_onnx: bool = False


@dataclass
class LoggerConf:
    tensorboard: TensorBoardConf | None = None
    csv: CSVConf | None = None
    mlflow: MLflowConf | None = None


# --- the search sweeper (hydra/sweeper=search, digits/search.py) ---------------------------------------------------
@dataclass
class SearchConf:
    _target_: str = target("hydra_plugins.digits_search.search_sweeper.SearchSweeper")
    direction: str = rule("maximize", choices=["maximize", "minimize"])
    study_name: str = "digits"
    storage: str | None = rule(None, what="an Optuna storage URL; null: sqlite in the sweep dir")
    n_trials: int = rule(20, ge=1, what="trials in the whole study")
    n_jobs: int = rule(1, ge=1, what="trials handed to the launcher at once")
    pruner: str = rule("none", choices=["none", "median", "hyperband"])
    figures: bool = True
    sampler: Any = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class GpusLauncherConf:
    _target_: str = target("hydra_plugins.digits_gpus.gpu_launcher.GpuLauncher")
    jobs_per_gpu: int = rule(1, ge=1, le=64, what="jobs at a time on each GPU")


def job_dir_name(num: Any, varied: str) -> str:
    """A sweep job's dir: its number, then what it varies (`3_lr=0.01,optim=adam`); '/' in a value would nest. A
    number of more than 6 significant digits (a search's sample, lr=0.02553378845151235) is named by 4 of them
    (lr=0.02553): the job's number keeps the name unique, and its config keeps the exact value."""
    import re

    def short(m: re.Match) -> str:
        text = m.group(0)
        return f"{float(text):.4g}" if len(re.sub(r"[^0-9]", "", text).lstrip("0")) > 6 else text

    varied = re.sub(r"(?<==)-?\d+\.\d+(?:e-?\d+)?(?=,|$)", short, varied)
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
    OmegaConf.register_new_resolver("digits_data_home", data_home, replace=True)
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
    cs.store(group="schema/callbacks", name="default", node=CallbacksConf)
    cs.store(group="schema", name="search", node=SearchConf)
    cs.store(group="schema/launcher", name="gpus", node=GpusLauncherConf)


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


# --- validation of the resolved config -------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_OPS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


INT_MAX = 2**31 - 1  # the bound of an integer key that names none of its own


def _violation(value: Any, limits: dict[str, Any]) -> str | None:
    """What is wrong with a resolved value under a field's limits, or None."""
    if "choices" in limits and not any(_same(value, c) for c in limits["choices"]):
        return "must be one of " + ", ".join("null" if c is None else str(c) for c in limits["choices"])
    if value is None:
        return None
    if isinstance(value, str) and not value.strip() and not limits.get("empty_ok"):
        return "must not be empty"
    if isinstance(value, (list, ListConfig)):
        if "length" in limits and len(value) != limits["length"]:
            return f"must have {limits['length']} items"
        item_limits = {k[len("items_") :]: v for k, v in limits.items() if k.startswith("items_")}
        bad = next((b for b in (_violation(item, item_limits) for item in value) if b), None)
        return f"each item {bad}" if bad else None
    bounds = [(k, v) for k, v in limits.items() if k in _OPS]
    if isinstance(value, int) and not isinstance(value, bool) and not any(k in ("le", "lt") for k, _ in bounds):
        bounds.append(("le", INT_MAX))  # every integer fits the C int it reaches (a count, a width, an index)
    if not bounds:
        return None
    if not _is_number(value):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    if all(_OPS[k][0](value, b) for k, b in bounds):
        return None
    return "must be " + " and ".join(f"{_OPS[k][1]} {b}" for k, b in bounds)


def _same(value: Any, choice: Any) -> bool:
    """1.0 is 1 but True is not 1: booleans and numbers are different kinds of value here."""
    return type(value) is type(choice) or (_is_number(value) and _is_number(choice)) if value == choice else False


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check the composed training config as it will run and return it resolved (plain values, without `hydra`).

    Every check reads the resolved config, not the command line's text, so an interpolation, an environment
    variable or an experiment file cannot carry a value past it: every key resolves, no key the schema lacks is
    present, no required key is removed, every value is of its type, in its range and among its choices, keys the
    run dir owns keep their text, and the cross-field rules hold. Raises one-line UserErrors naming the key."""
    body = _without_hydra(cfg)
    _check_keys(body, "")
    plain = _resolve(body)
    _check_values(body, plain, "")
    sweeper = OmegaConf.select(cfg, "hydra.sweeper")
    if isinstance(sweeper, DictConfig) and _fields(sweeper) is not None:  # a sweeper of ours (hydra/sweeper=search)
        _check_values(sweeper, _resolve_node(sweeper, "hydra.sweeper"), "hydra.sweeper.")
    for rule_ in CROSS_RULES:
        bad = rule_(plain, cfg)
        if bad:
            raise UserError(bad)
    return plain


def _without_hydra(cfg: DictConfig) -> DictConfig:
    import copy

    body = copy.deepcopy(cfg)
    with open_dict(body):
        if "hydra" in body:
            del body["hydra"]
    return body


def _resolve(body: DictConfig) -> dict[str, Any]:
    """Every interpolation resolved (the run dir stands in for `${hydra:runtime.output_dir}`, known only to Hydra's
    job), each typed value converted as OmegaConf does at run time."""
    from omegaconf.errors import OmegaConfBaseException

    trial = OmegaConf.create(body)  # keeps the node types
    paths = trial._get_node("paths")
    if isinstance(paths, DictConfig) and paths._get_node("output_dir") is not None:
        raw = OmegaConf.to_container(paths, resolve=False).get("output_dir")  # type: ignore[union-attr]
        if raw == RUN_DIR:
            paths.output_dir = "<run dir>"
    try:
        return OmegaConf.to_container(trial, resolve=True, throw_on_missing=True, enum_to_str=True)  # type: ignore
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        text = _raw_text(body, key)
        why = _first(e)
        raise UserError(f"{key}={text}: cannot be resolved ({why})" if text is not None else f"{key}: {why}") from None


def _resolve_node(node: DictConfig, key: str) -> dict[str, Any]:
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise UserError(f"{key}: cannot be resolved ({_first(e)})") from None


def _raw_text(body: DictConfig, key: str) -> str | None:
    node: Any = OmegaConf.to_container(body, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, (dict, list)) else str(node)


def _fields(node: Any) -> list[dataclasses.Field] | None:
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return list(dataclasses.fields(kind))
    return None


def _check_keys(node: DictConfig, prefix: str) -> None:
    """No key the schema lacks (`+learning_rate=0.5`), none it requires removed (`~lr`, `~model`)."""
    fields = _fields(node)
    if fields is None:
        return
    names = {f.name for f in fields}
    for key in node:
        if str(key) not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            valid = ", ".join(sorted(n for n in names if not n.startswith("_")))
            raise UserError(
                f"unknown key {prefix}{key}{hint}; valid keys{' of ' + prefix[:-1] if prefix else ''}: {valid}"
            )
    for f in fields:
        key = f"{prefix}{f.name}"
        if f.name not in node:
            raise UserError(f"{key} is required; it cannot be removed (~{key})")
        child = node._get_node(f.name)
        if f.metadata.get("required") and (child is None or child._is_none()):
            raise UserError(f"{key} is required; it cannot be removed (~{key}) or set to null")
        if isinstance(child, DictConfig) and not child._is_none():
            _check_keys(child, key + ".")


def _check_values(node: DictConfig, plain: Any, prefix: str) -> None:
    """Each field's limits on its resolved value; `fixed` fields on their text."""
    fields = _fields(node)
    if fields is None or not isinstance(plain, dict):
        return
    raw = OmegaConf.to_container(node, resolve=False)
    for f in fields:
        key, value = f"{prefix}{f.name}", plain.get(f.name)
        child = node._get_node(f.name)
        if isinstance(child, DictConfig) and not child._is_none():
            _check_values(child, value, key + ".")
            continue
        limits = dict(f.metadata)
        if "fixed" in limits:
            if raw.get(f.name) != limits["fixed"]:  # type: ignore[union-attr]
                raise UserError(f"{key} cannot be set: it is always {limits['fixed']} ({limits.get('what', '')})")
            continue
        bad = _violation(value, limits)
        if bad:
            what = f" ({limits['what']})" if "what" in limits else ""
            raise UserError(f"{key}={_show(value)}: {bad}{what}")


def _show(value: Any) -> str:
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    return "null" if value is None else str(value)


def check_plain(kind: type, values: Any, what: str) -> dict[str, Any]:
    """Values read from a file (a checkpoint's model or data config) checked against a schema: plain values of the
    schema's keys and types, within its limits. Nothing read from a file is ever instantiated, so a nested
    `_target_` or an unknown key is refused rather than followed."""
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise UserError(f"{what} is not a mapping of keys to values")
    for k, v in values.items():
        items = v if isinstance(v, list) else [v]
        if not all(x is None or isinstance(x, (bool, int, float, str)) for x in items):
            raise UserError(f"{what}: {k} holds {type(v).__name__}, not a plain value")
    try:
        node = OmegaConf.merge(OmegaConf.structured(kind), values)
    except OmegaConfBaseException as e:
        raise UserError(f"{what}: {_first(e)}") from None
    plain = OmegaConf.to_container(node, resolve=False)
    _check_values(node, plain, what + ".")  # type: ignore[arg-type]
    return plain  # type: ignore[return-value]


def _first(e: BaseException) -> str:
    return " ".join(str(e).splitlines()[0].split()) if str(e).strip() else type(e).__name__


# --- cross-field rules: each takes the resolved config (and the composed one, for hydra.*) ------------------------
def _monitors(plain: dict[str, Any]) -> list[tuple[str, str]]:
    cbs = plain.get("callbacks") or {}
    return [(name, str(c.get("monitor"))) for name, c in cbs.items() if isinstance(c, dict) and c.get("monitor")]


def _nesterov(plain: dict[str, Any], _cfg: DictConfig) -> str | None:
    optim = plain.get("optim") or {}
    if optim.get("nesterov") and not optim.get("momentum"):
        return "optim.nesterov=true needs optim.momentum > 0 (Nesterov's step is a momentum step)"
    return None


def _monitor_modes(plain: dict[str, Any], _cfg: DictConfig) -> str | None:
    for name, metric in _monitors(plain):
        mode = plain["callbacks"][name].get("mode")
        want = "max" if metric.endswith("acc") else "min"
        if mode is not None and mode != want:
            return f"callbacks.{name}.mode={mode}: {metric} is better when {'larger' if want == 'max' else 'smaller'}"
    return None


def _validation_each_epoch(plain: dict[str, Any], _cfg: DictConfig) -> str | None:
    """Early stopping counts epochs without a new best: it needs a validation score at every epoch's end."""
    every = (plain.get("trainer") or {}).get("check_val_every_n_epoch")
    stop = ((plain.get("callbacks") or {}).get("early_stopping") or {}).get("monitor", "")
    if every not in (None, 1) and str(stop).startswith("val/") and (plain.get("data") or {}).get("val_fraction", 0):
        return (
            f"trainer.check_val_every_n_epoch={every}: callbacks.early_stopping counts epochs by their validation "
            "score; set callbacks.early_stopping=null or validate every epoch"
        )
    return None


def _best_needs_a_checkpoint(plain: dict[str, Any], _cfg: DictConfig) -> str | None:
    validated = (plain.get("data") or {}).get("val_fraction", 0) > 0
    if (
        plain.get("final_weights") == "best"
        and validated
        and not (plain.get("callbacks") or {}).get("model_checkpoint")
    ):
        return "final_weights=best needs callbacks.model_checkpoint (it keeps the best weights); or final_weights=last"
    return None


def _nodes(plain: dict[str, Any], cfg: DictConfig) -> str | None:
    """More nodes than the launch provides would wait for the missing ones forever."""
    import os

    nodes = (plain.get("trainer") or {}).get("num_nodes") or 1
    if nodes <= 1:
        return None
    launcher = OmegaConf.select(cfg, "hydra.launcher.nodes", default=None)
    provided = os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES")
    if launcher == nodes or (provided is not None and int(provided) == nodes):
        return None
    return (
        f"trainer.num_nodes={nodes}: this launch runs on one node; use hydra/launcher=slurm "
        f"hydra.launcher.nodes={nodes}, or start it under srun on {nodes} nodes"
    )


def _trainer_values(plain: dict[str, Any], _cfg: DictConfig) -> str | None:
    """The Trainer keys that take more than one kind of value: each kind within its range."""
    import re

    t = plain.get("trainer") or {}
    devices = t.get("devices")
    ok = devices == "auto" or (_is_number(devices) and int(devices) == devices and devices >= 1)
    ok = ok or (isinstance(devices, list) and devices and all(isinstance(d, int) and d >= 0 for d in devices))
    if not ok:
        return f"trainer.devices={_show(devices)}: must be auto, a count >= 1, or a list of device indices"
    if t.get("accelerator") == "cpu" and isinstance(devices, list):
        return "trainer.devices: a list of device indices needs GPUs; on CPUs give a count of processes"
    for key in ("limit_train_batches", "limit_val_batches"):
        v = t.get(key)
        if _is_number(v) and isinstance(v, float) and v > 1:
            return f"trainer.{key}={v}: a fraction must be <= 1.0 (or give a whole number of batches)"
    max_time = t.get("max_time")
    if max_time is not None and not (isinstance(max_time, str) and re.fullmatch(r"\d+:\d{2}:\d{2}:\d{2}", max_time)):
        return f"trainer.max_time={_show(max_time)}: must be DD:HH:MM:SS, e.g. 00:02:00:00"
    return None


def _epoch_bounds(plain: dict[str, Any], _cfg: DictConfig) -> str | None:
    """Lightning trains max_epochs when min_epochs is larger, without a word: refuse the pair instead."""
    t = plain.get("trainer") or {}
    low, high = t.get("min_epochs"), t.get("max_epochs")
    if _is_number(low) and _is_number(high) and low > high:
        return f"trainer.min_epochs={low} is above trainer.max_epochs={high}: the run would stop at {high}"
    return None


CROSS_RULES = [
    _trainer_values,
    _nesterov,
    _monitor_modes,
    _validation_each_epoch,
    _best_needs_a_checkpoint,
    _nodes,
    _epoch_bounds,
]
