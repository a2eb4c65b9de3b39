"""Hydra finds launchers only under hydra_plugins: this names digits.launcher's GPU launcher there."""

from digits.launcher import GpuLauncherBase


class GpuLauncher(GpuLauncherBase):
    """`hydra/launcher=gpus`: a sweep's jobs on the visible GPUs, `jobs_per_gpu` at a time on each."""
