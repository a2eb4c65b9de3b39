"""The GPU path, on a machine with CUDA (`python -m pytest -m gpu`; skipped in one line without it).

Determinism on a GPU: a run killed mid-epoch and resumed equals the run left alone only with
`trainer.deterministic=true` and CUBLAS_WORKSPACE_CONFIG=:4096:8 (set below, as a user sets it): cuDNN then picks
deterministic kernels and cuBLAS a fixed workspace, which costs some speed, and an operation with no deterministic
kernel raises instead of running. Without them, two runs of one seed on one GPU differ in the last bits, and so
does a resumed run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA (a GPU and a CUDA build of torch)", allow_module_level=True)

from helpers import FAST, job_dir, make_folder, metrics_of, run_cli

pytestmark = pytest.mark.gpu

GPU = ["trainer=gpu", *FAST, "trainer.max_epochs=3", "trainer.limit_train_batches=null"]
DETERMINISTIC = ["trainer.deterministic=true", "model=lenet", "data.batch_size=64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(
        tmp_path_factory.mktemp("gpu") / "grid", n_train=3000, n_test=500, header="grid", test="labelled"
    )


@pytest.fixture(autouse=True)
def _cublas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def test_a_short_run_on_cuda_in_its_default_precision(tmp_path: Path, data: Path) -> None:
    run_cli([f"data.dir={data}", *GPU, f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path)
    m = metrics_of(tmp_path / "r")
    want = "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    assert m["status"] == "completed" and m["device"].startswith("cuda") and m["precision"] == want


def test_killed_mid_epoch_and_resumed_equals_the_run_left_alone(tmp_path: Path, data: Path) -> None:
    base = [f"data.dir={data}", *GPU, *DETERMINISTIC]
    run_cli([*base, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=60"]
    proc = run_cli([*base, f"hydra.run.dir={tmp_path / 'v'}", *killer], cwd=tmp_path, check=False)
    assert proc.returncode == -signal.SIGKILL
    run_cli([f"resume={tmp_path / 'v'}", "callbacks.extra.killer=null"], cwd=tmp_path)
    ref, got = metrics_of(tmp_path / "ref"), metrics_of(tmp_path / "v")
    for key in ("epochs", "val_acc", "val_loss", "test_acc"):
        assert got[key] == ref[key], key
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "v" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_gpu_trained_run_is_used_by_cpu_only_processes(tmp_path: Path, data: Path, monkeypatch) -> None:
    """predict, export and ensemble read a GPU-trained checkpoint in a process that sees no GPU."""
    run = tmp_path / "r"
    run_cli([f"data.dir={data}", *GPU, f"hydra.run.dir={run}"], cwd=tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = run_cli(
        [str(run), str(data / "test.csv"), "--out", str(tmp_path / "p.csv")], cwd=tmp_path, module="digits.predict"
    )
    assert "accuracy on the 500 labelled rows" in out.stdout
    if importlib.util.find_spec("onnxruntime"):
        run_cli([str(run), "--out", str(tmp_path / "m.onnx")], cwd=tmp_path, module="digits.export")
        assert (tmp_path / "m.onnx").is_file()
    run_cli([str(run), "--out", str(tmp_path / "ens")], cwd=tmp_path, module="digits.ensemble")
    assert (tmp_path / "ens" / "ensemble.json").is_file()


def test_two_jobs_share_one_gpu_through_the_launcher(tmp_path: Path, data: Path, monkeypatch) -> None:
    pytest.importorskip("cloudpickle")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0")
    sweep = tmp_path / "s"
    args = ["-m", "hydra/launcher=gpus", "hydra.launcher.jobs_per_gpu=2", f"data.dir={data}", *GPU, "seed=0,1"]
    run_cli([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    records = [metrics_of(job_dir(sweep, i)) for i in (0, 1)]
    assert {r["cuda_visible_devices"] for r in records} == {os.environ["CUDA_VISIBLE_DEVICES"]}
    assert all(r["status"] == "completed" and r["device"].startswith("cuda") for r in records)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP needs two GPUs")
def test_ddp_on_two_gpus(tmp_path: Path, data: Path) -> None:
    run_cli(
        [f"data.dir={data}", *GPU, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path
    )
    assert metrics_of(tmp_path / "r")["status"] == "completed"
