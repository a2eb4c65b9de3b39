"""What a run does besides training: record each epoch, say how it went, average the last epochs' weights, and turn
signals into a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger("digits.train")


def follow_the_run_dir(cb: ModelCheckpoint) -> ModelCheckpoint:
    """Read the checkpoint callback's saved state relative to the folder it writes to now.

    Lightning saves that state with absolute paths and, resumed in another folder (a run dir copied or moved), drops
    all of it but best_model_path: the best score is forgotten, the next epoch is taken as the best whatever its
    score, and it is written to best-v1.ckpt beside the copied best.ckpt. The schema fixes every checkpoint's folder
    to the run dir's checkpoints/, so a path the state names in its old folder is the same file in the new one. The
    config names Lightning's class (part of every run's identity), so this is applied to the built instance.
    """
    restore = cb.load_state_dict

    def load_state_dict(state: dict[str, Any]) -> None:
        old, new = state.get("dirpath"), cb.dirpath
        if old and new and old != new:

            def moved(path: Any) -> Any:
                return os.path.join(new, os.path.basename(path)) if path and os.path.dirname(path) == old else path

            state = {**state, "dirpath": new, "best_k_models": {moved(k): v for k, v in state["best_k_models"].items()}}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                state[key] = moved(state.get(key))
        restore(state)

    cb.load_state_dict = load_state_dict  # type: ignore[method-assign]
    return cb


class RunRecorder(Callback):
    """Each epoch's wall time and metrics (NaN where an epoch had no validation), kept in checkpoints so a resumed run
    continues the record, and one console/train.log line per epoch. metrics.json holds this history, so every
    logger's curves (TensorBoard, CSV, MLflow) can be held against the run's own record."""

    SERIES = ("train_loss", "train_acc", "val_loss", "val_acc")

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.series: dict[str, list[float]] = {k: [] for k in self.SERIES}
        self._start = 0.0
        self._validated = False

    @property
    def val_acc(self) -> list[float]:
        return self.series["val_acc"]

    def history(self) -> dict[str, list[float]]:
        """Per-epoch lists of equal length: the epoch times and each metric as its logger received it."""
        return {"epoch_seconds": list(self.epoch_seconds), **{k: list(v) for k, v in self.series.items()}}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        self.epoch_seconds.append(seconds)
        epoch_metrics = getattr(pl_module, "train_epoch_metrics", None)  # the values the module logs after this hook
        loss, acc = epoch_metrics() if epoch_metrics else (None, None)
        self.series["train_loss"].append(float(loss) if loss is not None else float("nan"))
        self.series["train_acc"].append(float(acc) if acc is not None else float("nan"))
        for key in ("val_loss", "val_acc"):  # read once an epoch; else last epoch's value would be repeated
            v = trainer.callback_metrics.get(key.replace("_", "/")) if self._validated else None
            self.series[key].append(float(v) if v is not None else float("nan"))
        if trainer.is_global_zero:
            log.info(self._line(trainer, seconds))

    def _line(self, trainer: L.Trainer, seconds: float) -> str:
        """So a run without a progress bar (a sweep, nohup) shows how it is going."""
        parts = [
            f"epoch {len(self.epoch_seconds)}/{trainer.max_epochs}",
            f"train loss {self.series['train_loss'][-1]:.4f}",
        ]
        if self._validated:
            val_loss = self.series["val_loss"][-1]
            best = max(a for a in self.val_acc if a == a)
            parts += [f"val loss {val_loss:.4f}" if val_loss == val_loss else "val loss -"]
            parts += [f"val acc {100 * self.val_acc[-1]:.2f}%", f"best {100 * best:.2f}%"]
        parts.append(f"{seconds:.1f} s")
        return "  ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_seconds": list(self.epoch_seconds), **{k: list(v) for k, v in self.series.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))
        n = len(self.epoch_seconds)
        for k in self.SERIES:  # a checkpoint from before a series was recorded: NaN for its epochs
            kept = list(state_dict.get(k, []))[-n:] if n else []
            self.series[k] = [float("nan")] * (n - len(kept)) + kept


class TailAverage(Callback):
    """The mean of the network's weights and batch-norm statistics at the end of each of the last `epochs` epochs.

    A fixed schedule's last weights still carry the noise of its last steps; the mean of the points its anneal passes
    through is a flatter one (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better
    Generalization"). Taken once an epoch, it costs one pass over the parameters, nothing per step. The running sum is
    part of every checkpoint, so a resumed run averages the same epochs. Lightning calls checkpoint callbacks last,
    so the epoch's weights are in the sum before its last.ckpt is written.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.sum: dict[str, torch.Tensor] = {}
        self.count = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 <= (trainer.max_epochs or 0) - self.epochs:
            return
        for key, value in pl_module.net.state_dict().items():  # type: ignore[union-attr]
            if not value.is_floating_point():  # batch-norm's num_batches_tracked: the last value stands
                continue
            value = value.detach().to(torch.float64)
            self.sum[key] = value.clone() if key not in self.sum else self.sum[key].add_(value)
        self.count += 1

    def average(self, net: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The averaged state for `net`, or None if no epoch of the window was reached (a run stopped early)."""
        if not self.count:
            return None
        state = net.state_dict()
        return {k: (self.sum[k] / self.count).to(v) if k in self.sum else v for k, v in state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"sum": dict(self.sum), "count": self.count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sum, self.count = dict(state_dict.get("sum", {})), int(state_dict.get("count", 0))


class SearchPruning(Callback):
    """Reports each epoch's validation accuracy to the Optuna trial a search (digits/search.py) started this job for,
    and stops the run when the study's pruner says so; the run then ends with status `pruned`."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.pruned = False
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc") if self._validated else None
        self._validated = False
        if acc is None or self.trial is None:
            return
        from digits.search import storage_errors, storage_reason

        try:
            self.trial.report(float(acc), step=trainer.current_epoch + 1)  # one host read an epoch
            prune = self.trial.should_prune()
        except storage_errors() as e:  # pruning is advice: the run goes on and keeps its record
            log.warning("the study's storage was lost (%s): this trial goes on without pruning", storage_reason(e))
            self.trial = None
            return
        if prune:
            self.pruned = True
            trainer.should_stop = True


class SignalsAsInterrupts:
    """While training, SIGTERM behaves like Ctrl-C (KeyboardInterrupt); `got` holds the signals that came.

    Lightning turns a KeyboardInterrupt into its own clean-up and sys.exit(1); the caller checks `got` to tell that
    from a real exit.
    """

    def __enter__(self) -> list[int]:
        self.got: list[int] = []

        def handler(signum: int, _frame: object) -> None:
            self.got.append(signum)
            raise KeyboardInterrupt

        # A SIGINT ignored from the start stays ignored: a shell starts background jobs that way so that the
        # terminal's Ctrl-C, meant for the foreground, does not stop them (Python itself keeps it ignored too).
        caught = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
        self.previous = {s: signal.signal(s, handler) for s in caught}
        return self.got

    def __exit__(self, *exc: object) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
