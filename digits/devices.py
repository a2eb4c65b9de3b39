"""Device policy: the precision, batch size and memory format a run gets when its config leaves them open (null).

Each default is the fastest measured for its device; an explicit value in the config always wins.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig


def auto_precision(trainer_cfg: DictConfig) -> str:
    """bf16-mixed where the training device is a GPU with bf16, else full fp32 (bf16 is far slower on most CPUs)."""
    if trainer_cfg.get("precision") is not None:
        return str(trainer_cfg.precision)
    return "bf16-mixed" if on_gpu(trainer_cfg) and torch.cuda.is_bf16_supported() else "32-true"


def auto_batch_size(cfg: DictConfig) -> int:
    """512 on a GPU, where small batches leave it idle waiting for launches; 128 on a CPU, where they don't."""
    if cfg.data.get("batch_size") is not None:
        return int(cfg.data.batch_size)
    return 512 if on_gpu(cfg.trainer) else 128


def auto_channels_last(cfg: DictConfig, net: torch.nn.Module, precision: str) -> bool:
    """On GPUs with bf16, always; on CPUs where the architecture says it is faster there (measured per model)."""
    if cfg.get("channels_last") is not None:
        return bool(cfg.channels_last)
    if on_gpu(cfg.trainer):
        return precision.startswith("bf16")
    return bool(getattr(net, "channels_last_on_cpu", False))


def on_gpu(trainer_cfg: DictConfig) -> bool:
    return trainer_cfg.get("accelerator") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
