"""`hydra/launcher=gpus`: a sweep's jobs side by side on the GPUs this command sees, `jobs_per_gpu` at a time on each.

Hydra's joblib launcher starts every job on the first GPU. Here each job runs in a process of its own, started with
CUDA_VISIBLE_DEVICES naming one GPU, so a job's `cuda:0` is its GPU and its neighbours cannot touch it; a new process
per job, since CUDA reads that variable once per process. The next job starts as soon as a slot frees. The GPUs are
those of CUDA_VISIBLE_DEVICES when it is set (ids or UUIDs), else every device torch counts; each job records the one
it was given (`cuda_visible_devices` in metrics.json). On a machine without GPUs, CUDA_VISIBLE_DEVICES=0,1 with
trainer.accelerator=cpu exercises the same placement, which is how it is tested.

Each job gets an equal share of the CPU cores for its own threads (cores / slots, at least 1).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from digits.errors import UserError

log = logging.getLogger("digits.launcher")


def visible_gpus() -> list[str]:
    """The GPUs this command may use: CUDA_VISIBLE_DEVICES's entries when it is set, else torch's device count."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _execute_pickled(blob: bytes) -> bytes:
    """Hydra's state holds resolvers registered as closures and config classes made at run time, which the standard
    pickle refuses: a job's arguments and its JobReturn travel as cloudpickle's bytes (as Hydra's joblib launcher
    sends them, through loky)."""
    import cloudpickle

    return cloudpickle.dumps(_execute(*cloudpickle.loads(blob)))


def _execute(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    gpu: str,
    threads: int,
) -> JobReturn:
    """One job, in its own process: its GPU set before anything can initialise CUDA (as Hydra's joblib launcher
    runs a job, otherwise)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


class GpuLauncherBase(Launcher):
    """The launcher; hydra_plugins/digits_gpus names a subclass of it, where Hydra looks for plugins."""

    def __init__(self, jobs_per_gpu: int = 1) -> None:
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        gpus = visible_gpus()
        if not gpus:
            raise UserError(
                "hydra/launcher=gpus places jobs on GPUs, and this command sees none (no CUDA device, "
                "CUDA_VISIBLE_DEVICES empty); use hydra/launcher=parallel on CPUs"
            )
        slots = [g for g in gpus for _ in range(self.jobs_per_gpu)]
        threads = max(1, (os.cpu_count() or 1) // len(slots))
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(
            "%d jobs on GPUs %s, %d at a time on each (%d threads a job)",
            len(job_overrides),
            ",".join(gpus),
            self.jobs_per_gpu,
            threads,
        )
        for i, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
        import cloudpickle

        state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        free = list(slots)
        todo = list(enumerate(job_overrides))
        running: dict[Future, tuple[int, str]] = {}
        context = mp.get_context("spawn")  # a fresh interpreter: no CUDA state inherited, as the variable needs
        with ProcessPoolExecutor(max_workers=len(slots), mp_context=context, max_tasks_per_child=1) as pool:
            while todo or running:
                while todo and free:
                    i, overrides = todo.pop(0)
                    gpu = free.pop(0)
                    args = (initial_job_idx + i, overrides, self.hydra_context, self.config, self.task_function)
                    blob = cloudpickle.dumps((*args, state, gpu, threads))
                    running[pool.submit(_execute_pickled, blob)] = (i, gpu)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i, gpu = running.pop(future)
                    results[i] = cloudpickle.loads(future.result())
                    free.append(gpu)  # the slot frees: the next job starts on this GPU
        return [results[i] for i in range(len(job_overrides))]
