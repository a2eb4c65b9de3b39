"""Checking and expanding the command line before Hydra sees it.

Hydra reports a bad override with several lines and a hint about HYDRA_FULL_ERROR; a user who typed `model=nope`
should get one line that lists the valid choices. `resume=DIR` is expanded here into the overrides saved in DIR,
so a resumed run needs no repeated arguments.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from omegaconf import DictConfig

from digits import runs
from digits.errors import UserError


def _find_conf() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):  # source tree, then the copy inside a wheel
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"cannot find the config directory next to {here}")


CONF_DIR = _find_conf()
FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--info", "-i"}


def groups() -> dict[str, list[str]]:
    """Config groups of this project and their choices (file stems), e.g. {'model': ['alexnet', ...]}."""
    out = {}
    for d in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        out[d.name] = sorted(f.stem for f in d.glob("*.yaml"))
    return out


def _split_override(arg: str) -> tuple[str, str] | None:
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    return key.lstrip("+~"), value


def _choices(value: str) -> list[str]:
    """Sweep syntax a,b,c or choice(a,b) -> the names; anything fancier is left to Hydra."""
    v = value.strip()
    if v.startswith("choice(") and v.endswith(")"):
        v = v[len("choice(") : -1]
    return [c.strip() for c in v.split(",") if c.strip()]


def validate(args: list[str]) -> None:
    """Unknown group choices and init schemes become one-line UserErrors listing what is valid."""
    known = groups()
    for arg in args:
        kv = _split_override(arg)
        if kv is None:
            continue
        key, value = kv
        if key in known:
            for choice in _choices(value):
                if choice == "null":
                    raise UserError(f"{key}=null is not how a config group is dropped; write ~{key} instead")
                if choice not in known[key]:
                    raise UserError(f"unknown {key} '{choice}'; valid: {', '.join(known[key])}")
        elif key == "init":
            from digits.models.init import INIT_SCHEMES

            for choice in _choices(value):
                if choice not in INIT_SCHEMES:
                    raise UserError(f"unknown init '{choice}'; valid: {', '.join(INIT_SCHEMES)}")
        elif (
            key == "hydra.run.dir"
            and not any(a.startswith("resume=") for a in args)
            and runs.holds_results(Path(value))
        ):
            raise UserError(f"already holds a run; resume it with resume={value} or choose another dir", value)


def expand_resume(args: list[str]) -> list[str]:
    """resume=DIR -> the overrides saved in DIR, then hydra.run.dir=DIR, then any other arguments given."""
    resume = [a for a in args if a.startswith("resume=")]
    if not resume:
        return args
    run_dir = Path(resume[-1].split("=", 1)[1])
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir():
        raise UserError("no such run dir to resume", run_dir)
    if not saved.is_file():
        raise UserError("not a run dir (no .hydra/overrides.yaml to resume from)", run_dir)
    previous = [
        o
        for o in (yaml.safe_load(saved.read_text()) or [])
        if not o.startswith(("resume=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.job.num="))
    ]
    rest = [a for a in args if not a.startswith(("resume=", "hydra.run.dir="))]
    return [*previous, *rest, f"hydra.run.dir={run_dir}", f"resume={run_dir}"]


def precompose(args: list[str]) -> None:
    """Compose the config once (single runs) so a bad override is reported in one line, before any dir exists."""
    if any(a in ("-m", "--multirun") for a in args) or any(a.startswith("-") for a in args):
        return
    overrides = [a for a in args if "=" in a]
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise UserError(f"bad override: {text}") from None
    check_numbers(cfg)


def check_numbers(cfg: DictConfig | dict) -> None:
    """Top-level numbers come from the command line as text; say which one is wrong instead of a deep traceback."""
    for key, kind in (("lr", float), ("l1", float), ("seed", int)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            raise UserError(f"{key} must be a number{' (an integer)' if kind is int else ''}, got {value!r}")


def _is_multirun(args: list[str]) -> bool:
    """-m, or an experiment whose file sets hydra.mode: MULTIRUN (compare_models, optim_grid)."""
    if any(a in ("-m", "--multirun") for a in args):
        return True
    for a in args:
        if a.startswith("experiment="):
            path = CONF_DIR / "experiment" / f"{a.split('=', 1)[1]}.yaml"
            if path.is_file() and "mode: MULTIRUN" in path.read_text():
                return True
    return False


def _target_dir(args: list[str]) -> Path:
    """Where this command will write: hydra.run.dir / hydra.sweep.dir if given, else outputs/."""
    key = "hydra.sweep.dir=" if _is_multirun(args) else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in args if a.startswith(key)]
    return Path(given[-1]) if given else Path("outputs")


MIN_FREE_BYTES = 50 * 2**20


def check_writable(args: list[str]) -> None:
    """Refuse up front when the output dir cannot be written or its disk is (nearly) full."""
    target = _target_dir(args)
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create the output dir: {probe} is not a directory", target)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UserError(f"output dir is not writable ({e.strerror or e})", target) from None
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"only {free // 2**20} MiB free on the output disk; need at least 50 MiB", target)


def prepare(args: list[str]) -> list[str]:
    args = expand_resume(args)
    validate(args)
    if not any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):  # --help, --cfg, ... write nothing
        check_writable(args)
    precompose(args)
    return args
