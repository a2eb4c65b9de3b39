"""A missing extra or service is one line naming what to install, exit 2, before anything is written.

The packages are really absent for the command: a sitecustomize on its PYTHONPATH puts an import hook first on
sys.meta_path that refuses them, as an interpreter without them would (ModuleNotFoundError, find_spec fails).
Each command runs in a new interpreter, since the fork server has already imported them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FAST, ROOT, cli_env, make_folder, one_line_error
from helpers.forkclient import run_fresh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digits import extras

HIDER = """
import importlib.abc, os, sys

class _Hide(importlib.abc.MetaPathFinder):
    names = tuple(n for n in os.environ.get("DIGITS_TEST_HIDE", "").split(",") if n)

    def find_spec(self, name, path=None, target=None):
        if any(name == n or name.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Hide())

# Hydra finds its plugins by walking the hydra_plugins namespace with pkgutil, which asks the path's finders
# directly: an absent plugin is not among them.
import pkgutil

_walk = pkgutil.walk_packages


def _walk_present(*args, **kwargs):
    for info in _walk(*args, **kwargs):
        if not any(info.name == n or info.name.startswith(n + ".") for n in _Hide.names):
            yield info


pkgutil.walk_packages = _walk_present
"""


def run_without(tmp_path: Path, hidden: list[str], args: list[str], module: str = "digits.train", path: str = ""):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDER)
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    env["DIGITS_TEST_HIDE"] = ",".join(hidden)
    if path:
        env["PATH"] = path
    return run_fresh(module, args, cwd=tmp_path, env=env, timeout=120)


# Each part that needs an extra: the command that asks for it, what to hide, and the extra the line must name.
CASES = {
    "parallel": (["-m", "hydra/launcher=parallel", "lr=0.1,0.2"], ["hydra_plugins.hydra_joblib_launcher"], "sweep"),
    "slurm": (["-m", "hydra/launcher=slurm", "lr=0.1,0.2"], ["hydra_plugins.hydra_submitit_launcher"], "sweep"),
    "search": (["-m", "hydra/sweeper=search"], ["optuna"], "sweep"),
    "experiment=search": (["-m", "experiment=search"], ["optuna"], "sweep"),
    "mlflow sweep": (["-m", "logger=mlflow", "lr=0.1,0.2"], ["mlflow"], "track"),
    "many": (["logger=many"], ["mlflow"], "track"),
    "listed": (["logger=[tensorboard,mlflow]"], ["mlflow"], "track"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_extra_is_one_line_before_anything_is_written(tmp_path: Path, case: str) -> None:
    args, hidden, extra = CASES[case]
    data = make_folder(tmp_path / "d", n_train=100, n_test=20)
    proc = run_without(tmp_path, hidden, [*args, f"data.dir={data}", *FAST])
    one_line_error(proc, f'pip install -e ".[{extra}]"')
    assert not (tmp_path / "outputs").exists()


def test_slurm_without_a_cluster_says_so(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    data = make_folder(tmp_path / "d", n_train=100, n_test=20)
    bare = tmp_path / "bin"  # a PATH with python but no SLURM client
    bare.mkdir()
    proc = run_without(tmp_path, [], ["-m", "hydra/launcher=slurm", f"data.dir={data}", *FAST], path=str(bare))
    one_line_error(proc, "needs a SLURM cluster")
    assert "sbatch" in proc.stderr and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [("digits.export", ["RUN"], "export"), ("digits.demo", ["RUN"], "demo")],
)
def test_the_tools_name_their_extra(tmp_path: Path, module: str, args: list[str], extra: str) -> None:
    hidden = [m for m, (_, e) in extras.EXTRA_OF.items() if e == extra]
    proc = run_without(tmp_path, hidden, [str(tmp_path / a) for a in args], module=module)
    one_line_error(proc, f'pip install -e ".[{extra}]"')


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    module=st.sampled_from(sorted(extras.EXTRA_OF)),
    depth=st.integers(0, 2),
    name=st.from_regex(r"[A-Z]\w{0,8}", fullmatch=True),
)
def test_any_target_from_a_missing_package_names_its_extra(module: str, depth: int, name: str) -> None:
    """The table covers every target a config may hold, nested at any depth, whoever wrote it."""
    target = f"{module}.{name}"
    cfg: dict = {"_target_": target}
    for i in range(depth):
        cfg = {f"k{i}": cfg}
    hidden = extras._installed
    try:
        extras._installed = lambda m: m != extras._module_of(target)  # type: ignore[assignment]
        with pytest.raises(extras.UserError) as e:
            extras.check_config(cfg)
    finally:
        extras._installed = hidden  # type: ignore[assignment]
    package, extra = extras.EXTRA_OF[module]
    assert f'".[{extra}]"' in str(e.value) and package in str(e.value)


def test_the_table_names_real_extras() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for _package, extra in extras.EXTRA_OF.values():
        assert f"\n{extra} = [" in text, extra
