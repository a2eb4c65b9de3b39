"""What each optional part needs, in one table, checked before anything is written.

The runtime (`pip install -e .`) trains and predicts; launchers, the search, MLflow, ONNX export and the demo come
with extras. A config that names a part whose package is missing would otherwise fail deep inside Hydra or
Lightning (a "Could not load 'hydra/launcher/joblib'", an "Error locating target", every job of a sweep failing
one by one), or, for SLURM, with a traceback from a cluster client that is not there. So every `_target_` of a
composed config, the job's and Hydra's own, is looked up here before any dir is claimed, and a missing package or
command is one line that says what to install.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from typing import Any

from digits.errors import UserError

# The package each import brings, and the extra of this project that installs it.
EXTRA_OF = {
    "hydra_plugins.hydra_joblib_launcher": ("hydra-joblib-launcher", "sweep"),
    "hydra_plugins.hydra_submitit_launcher": ("hydra-submitit-launcher", "sweep"),
    "submitit": ("submitit", "sweep"),
    "cloudpickle": ("cloudpickle", "sweep"),
    "optuna": ("optuna", "sweep"),
    "mlflow": ("mlflow", "track"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "gradio": ("gradio", "demo"),
}

# Targets of this project whose module imports, but which need an extra's package when they run.
NEEDS_OF_TARGET = {
    "digits.loggers.mlflow_run.EpochMLFlowLogger": ("mlflow",),
    "hydra_plugins.digits_search.search_sweeper.SearchSweeper": ("optuna",),
    "hydra_plugins.digits_gpus.gpu_launcher.GpuLauncher": ("cloudpickle",),
}

# Configs that a plugin registers when it is installed: composing without it says "Could not load '<name>'".
PLUGIN_CONFIGS = {
    "hydra/launcher/joblib": "hydra_plugins.hydra_joblib_launcher",
    "hydra/launcher/submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher/submitit_local": "hydra_plugins.hydra_submitit_launcher",
}

# Targets that drive a service through its command-line client: the client must be on PATH.
COMMANDS_OF_TARGET = {
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": (
        ("sbatch", "srun"),
        "a SLURM cluster (run the sweep where `sbatch` and `srun` work: a cluster's login node; "
        "Debian's slurm-client brings them)",
    ),
}


def _no_gpu() -> str | None:
    from digits.launcher import visible_gpus

    if visible_gpus():
        return None
    return (
        "a GPU, and this command sees none (CUDA_VISIBLE_DEVICES is empty, or torch finds no CUDA device); "
        "use hydra/launcher=parallel on CPUs"
    )


# Targets that need something of the machine besides packages: a check that says what is missing, or None.
MACHINE_CHECKS = {"hydra_plugins.digits_gpus.gpu_launcher.GpuLauncher": _no_gpu}


def _module_of(target: str) -> str:
    """The import to look up for a dotted target, without importing the package itself (find_spec of a top-level
    name does not import it; hydra_plugins is a namespace package, cheap to enter)."""
    parts = target.split(".")
    return ".".join(parts[:2]) if parts[0] == "hydra_plugins" else parts[0]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_line(modules: tuple[str, ...] | list[str], what: str) -> str | None:
    """One line naming what to install for `what`, or None when every module is there."""
    missing = [m for m in modules if not _installed(m)]
    if not missing:
        return None
    packages = [EXTRA_OF.get(m, (m, None))[0] for m in missing]
    extras = sorted({EXTRA_OF[m][1] for m in missing if m in EXTRA_OF})
    how = (
        f'pip install -e ".[{",".join(extras)}]" (or pip install {" ".join(packages)})'
        if extras
        else (f"pip install {' '.join(packages)}")
    )
    return f"{what} needs {', '.join(packages)}, which {'is' if len(packages) == 1 else 'are'} not installed: {how}"


def require(modules: tuple[str, ...] | list[str], what: str) -> None:
    line = missing_line(modules, what)
    if line:
        raise UserError(line)


def check_config(cfg: Any, machine: bool = True) -> None:
    """Every `_target_` of a composed config (OmegaConf, Hydra's part included) can be built on this machine."""
    from omegaconf import DictConfig, OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    for key, target in _targets(tree, ""):
        modules = NEEDS_OF_TARGET.get(target, (_module_of(target),))
        where = key or "the config"
        line = missing_line(modules, f"{where} ({target})")
        if line:
            raise UserError(line)
        commands, service = COMMANDS_OF_TARGET.get(target, ((), ""))
        absent = [c for c in commands if shutil.which(c) is None]
        if absent:
            raise UserError(f"{where} ({target}) needs {service}; {', '.join(absent)} not found on PATH")
        missing = MACHINE_CHECKS[target]() if machine and target in MACHINE_CHECKS else None
        if missing:
            raise UserError(f"{where} ({target}) needs {missing}")


def _targets(node: Any, path: str):
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and "${" not in target:
            yield path, target
        for k, v in node.items():
            yield from _targets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _targets(v, f"{path}[{i}]")


def explain_missing_config(message: str) -> str | None:
    """Hydra's "Could not load 'hydra/launcher/joblib'" for a config that a missing plugin would register."""
    for name, module in PLUGIN_CONFIGS.items():
        if f"Could not load '{name}'" in message and not _installed(module):
            chosen = re.search(r"In '([\w/]+)/(\w+)'", message)  # the user's choice that asked for it
            what = f"{chosen.group(1)}={chosen.group(2)}" if chosen else name
            return missing_line((module,), what)
    return None
