"""Device policy: the precision, batch size and memory format a run gets when its config leaves them open (null).

Each default is the fastest measured for its device; an explicit value in the config always wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch
from omegaconf import DictConfig

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def auto_precision(trainer_cfg: DictConfig) -> str:
    """bf16-mixed on a GPU with bf16 and on a CPU with bf16 instructions, else full fp32.

    A CPU without them emulates bf16 and trains far slower (1,339 against 2,093 images/s on a 2-core Xeon with
    AVX-512 but no AVX512-BF16); one with them trains twice as fast (3,784 against 1,751 images/s on a 2-core
    Xeon with AMX, the `original` CNN in channels_last, benchmarks/train_speed.py)."""
    if trainer_cfg.get("precision") is not None:
        return str(trainer_cfg.precision)
    if on_gpu(trainer_cfg):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX, the instructions that do bf16 matrix products in hardware (torch's own checks).

    DIGITS_CPU_BF16=1 or 0 overrides the answer, so that the default of the other kind of CPU can be exercised on
    this one (CI runs the tests that recompute a run's numbers under both); an explicit trainer.precision wins
    over either."""
    forced = os.environ.get("DIGITS_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


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


def keep_freed_buffers(trainer_cfg: DictConfig) -> None:
    """On CPUs under glibc, keep freed activation buffers in the heap for the next step.

    A training step allocates and frees the same multi-megabyte activations every time. glibc hands blocks over
    128 KiB back to the OS on free and maps fresh zeroed pages on the next allocation: for the `original` CNN on
    two cores, ~3,000 page faults a step. Raising the mmap and trim thresholds to 1 GiB cuts them 30-fold and makes
    a step 4% faster (10 interleaved runs, 2-core Xeon); the cost is that the process keeps its peak memory until it
    exits. It changes no number. A no-op on GPUs and where the C library is not glibc.
    """
    if on_gpu(trainer_cfg) or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
