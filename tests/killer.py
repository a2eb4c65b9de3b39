"""Test-only callbacks: a signal at a chosen global step (mid-epoch), and a pause after every step."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    def __init__(self, step: int, sig: str = "SIGKILL"):
        self.step = step
        self.sig = getattr(signal, sig)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class SleepEachStep(Callback):
    """Makes a tiny run last long enough for a test to signal it mid-training (results are unchanged)."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        time.sleep(self.seconds)


class SignalOnce(SignalAtStep):
    """SignalAtStep the first time only, across processes: `marker` records that it fired (a search re-run then
    goes on undisturbed)."""

    def __init__(self, step: int, marker: str, sig: str = "SIGKILL"):
        super().__init__(step, sig)
        self.marker = marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write("fired\n")
            os.kill(os.getpid(), self.sig)


class SignalWhileTesting(Callback):
    """A signal after training, as the run scores its test split: the first call of the pipeline's predict_splits
    sends it (deterministically inside that stage, not on a timer)."""

    def __init__(self, sig: str = "SIGTERM"):
        self.sig = getattr(signal, sig)

    def on_fit_end(self, trainer, pl_module) -> None:
        from digits import pipeline

        original, sig = pipeline.predict_splits, self.sig

        def signalled(*args, **kwargs):
            pipeline.predict_splits = original
            os.kill(os.getpid(), sig)
            return original(*args, **kwargs)

        pipeline.predict_splits = signalled


class CommandOnce(Callback):
    """Runs the shell script `script` once, at global step `step` of the first process that gets there (`marker`
    records it): an outside event, such as a database server stopped, at a chosen moment of a training run."""

    def __init__(self, step: int, script: str, marker: str):
        self.step, self.script, self.marker = step, script, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import subprocess

        if trainer.global_step == self.step and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write("fired\n")
            subprocess.run(["bash", self.script], check=True, capture_output=True)
