"""Inference with plain torch: softmax over a whole split, and checkpoints loaded safely (weights_only=True)."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from digits import plots
from digits.data.batches import TensorBatches
from digits.errors import UserError

if TYPE_CHECKING:
    from digits.data.datamodule import DigitsDataModule


@torch.no_grad()
def predict_probs(
    net: nn.Module, images: torch.Tensor, batch_size: int = 1000, *, precision: str | None
) -> torch.Tensor:
    """Softmax probabilities [N, 10] (float32, on the CPU) for uint8 images [N, 1, 28, 28] on the net's device.

    `precision` is the run's (precision_of), and a caller must say it: a bf16 run is evaluated under bf16 autocast
    on any device, as its validation epochs were, so every number a run records and every tool's recomputation of
    it agree. The memory format is the net's own (net_from_checkpoint gives back the run's)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    images = images.to(device)
    out = []
    if precision is None:  # a checkpoint from before runs recorded their precision
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    else:
        use_bf16 = str(precision).startswith("bf16")
    for (x,) in TensorBatches(images, None, batch_size, shuffle=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(x)
        out.append(torch.softmax(logits.float(), dim=1))
    net.train(was_training)
    return torch.cat(out).cpu() if out else torch.zeros(0, 10)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; a truncated or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such checkpoint", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the error below says what matters
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign globals, not a torch file at all...
        raise UserError(_why_unreadable(e), path) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "digits_config" not in ckpt:
        raise UserError("not a digits checkpoint (no state_dict / digits_config)", path)
    return ckpt


def _why_unreadable(e: BaseException) -> str:
    """torch's messages run to a paragraph (and advise weights_only=False, which would run the file's code); say
    in plain words what is wrong with the file instead."""
    text = str(e)
    if isinstance(e, EOFError) or "central directory" in text or "failed reading zip archive" in text:
        return "is truncated or damaged (not a complete checkpoint); the run that wrote it may have been killed"
    if "Weights only load failed" in text or isinstance(e, pickle.UnpicklingError):
        return "holds Python objects, not only tensors and numbers, so it is not loaded (not a digits checkpoint)"
    return "is not a PyTorch checkpoint file"


def net_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the bare architecture from the config stored in the checkpoint and load its weights.

    A checkpoint is data: the model is built by digits.models.build from the registry of this project's
    architectures with checked plain values, never instantiated from what the file names."""
    from digits import models

    ckpt = load_checkpoint(path)
    cfg = ckpt["digits_config"]
    if not isinstance(cfg, dict):
        raise UserError("holds no model config", path)
    try:
        net = models.build(cfg.get("model"), what="its model config")
    except UserError as e:
        raise UserError(e.what, path) from None
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"weights do not fit the stored model config ({str(e).splitlines()[0]})", path) from None
    if channels_last_of(cfg, net):
        # The run's memory format, as its test predictions were made: in bf16 the kernels of the two formats round
        # differently, so a contiguous copy of a channels_last run reads a few softmax values 1e-3 apart.
        net.to(memory_format=torch.channels_last)
    return net.eval(), cfg


def channels_last_of(cfg: dict[str, Any], net: nn.Module) -> bool:
    """The memory format a run trained and evaluated in: the resolved value its checkpoint stores, or, for a run
    from before checkpoints stored it, the CPU policy of digits.devices (those runs trained on CPUs)."""
    value = (cfg or {}).get("channels_last")
    if value is None:
        return bool(getattr(net, "channels_last_on_cpu", False))
    return bool(value)


def tested_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint file a run was tested with, as its record names it: every tool uses exactly that file. Runs
    from before records named it: best.ckpt, last.ckpt for a run that kept its last weights, average.ckpt for one
    that averaged them."""
    from digits.runs import RESULT_STATUSES, RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError("no such run dir", run.path)
    record = run.read_record()
    if record is None:
        from digits.runs import job_dirs

        jobs = job_dirs(run.path)
        if jobs or run.kind() == "sweep":
            shown = ", ".join(j.name for j in jobs[:3]) + (", ..." if len(jobs) > 3 else "")
            raise UserError(f"is a sweep dir, not a run; name one of its {len(jobs)} jobs ({shown})", run.path)
        raise UserError("has no metrics.json: not a training run, or one that was killed before it began", run.path)
    status = record.get("status")
    if status not in RESULT_STATUSES:
        how = f"; continue it with: {record['resume']}" if record.get("resume") else ""
        raise UserError(f"is a run that did not finish (status {status}): its weights were never tested{how}", run.path)
    named = record.get("tested_checkpoint")
    if isinstance(named, str):
        path = run.path / named
        if run.path.resolve() not in path.resolve().parents or not path.is_file():
            raise UserError(f"has no checkpoint {named} (the file its record names as the tested weights)", run.path)
        return path
    order = [run.best_checkpoint, run.last_checkpoint]
    if record.get("tested_weights") == "last":
        order.reverse()
    if record.get("tested_weights") == "average":
        order.insert(0, run.average_checkpoint)
    for ckpt in order:
        if ckpt.is_file():
            return ckpt
    raise UserError("has no checkpoint (checkpoints/best.ckpt or last.ckpt); is it a finished training run?", run.path)


def precision_of(cfg: dict[str, Any]) -> str | None:
    """The precision a run trained (and so validated) in, from its stored config."""
    value = ((cfg or {}).get("trainer") or {}).get("precision")
    return None if value is None else str(value)


def predict_splits(dm: DigitsDataModule, net: nn.Module, precision: str | None = None) -> dict[str, np.ndarray]:
    """Softmax on the test split (and on validation when the test split is unlabelled, for the figures), with the
    images of the worst mistakes, so the report can draw them without the data."""
    assert dm.train is not None and dm.val is not None
    net.to(dm.train.images.device)
    out: dict[str, np.ndarray] = {}
    if not dm.test_labelled and len(dm.val):
        out["val_probs"] = predict_probs(net, dm.val.images, dm.eval_batch_size, precision=precision).numpy()
        out["val_labels"] = dm.val.labels.cpu().numpy()  # type: ignore[union-attr]
    if dm.test is not None:
        out["test_probs"] = predict_probs(net, dm.test.images, dm.eval_batch_size, precision=precision).numpy()
        out["test_fingerprint"] = np.array(hashlib.sha1(dm.test.images.cpu().numpy().tobytes()).hexdigest())
        if dm.test.labels is not None:
            out["test_labels"] = dm.test.labels.cpu().numpy()
    split, probs, labels = plots.labelled_split(out)
    if probs is not None and labels is not None:
        out["mistake_index"] = plots.top_mistakes(probs, labels)
        images = (dm.test if split == "test" else dm.val).images  # type: ignore[union-attr]
        out["mistake_images"] = images[torch.from_numpy(out["mistake_index"]).to(images.device)].cpu().numpy()
    return out


def val_accuracy(dm: DigitsDataModule, net: nn.Module, precision: str | None = None) -> float | None:
    """Accuracy on the validation split of weights that no epoch validated (the averaged ones); None without one."""
    if dm.val is None or not len(dm.val) or dm.val.labels is None:
        return None
    probs = predict_probs(net, dm.val.images, dm.eval_batch_size, precision=precision)
    return float((probs.argmax(1) == dm.val.labels.cpu()).float().mean())


def test_scores(preds: dict[str, np.ndarray]) -> tuple[float | None, float | None]:
    if "test_labels" not in preds:
        return None, None
    probs, labels = torch.from_numpy(preds["test_probs"]), torch.from_numpy(preds["test_labels"])
    acc = float((probs.argmax(1) == labels).float().mean())
    loss = float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), labels))
    return acc, loss
