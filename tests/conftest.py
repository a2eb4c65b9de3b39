"""Shared fixtures: data folders made in the test; the helpers themselves live in tests/helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import ROOT, make_folder


@pytest.fixture
def kaggle_dir(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "kaggle", header="kaggle", test="unlabelled")


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "grid", header="grid", test="labelled")


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1 if "PYTEST_XDIST_WORKER" in os.environ else 2)
    yield


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse caches that cannot go beside a CSV go to $XDG_CACHE_HOME: a temporary one, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """A one-node, CPU-only SLURM cluster on this machine (Debian's slurmctld, slurmd and munge; root)."""
    if not (shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("sbatch")):
        pytest.skip("needs SLURM: apt-get install slurmctld slurmd munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd needs root")
    state = tmp_path_factory.mktemp("slurm")
    script = ROOT / "tests" / "slurm" / "one_node.sh"
    subprocess.run([str(script), str(state), "start"], check=True, timeout=120)
    yield state
    subprocess.run([str(script), str(state), "stop"], check=False, timeout=60)
