"""Every model with every init, the regularization knobs, augmentation, determinism, the report's two studies."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, ROOT, job_dir, make_folder, metrics_of, run_cli
from test_models import REFERENCE

from digits.callbacks import TailAverage
from digits.data import DigitsDataModule
from digits.data.augment import Augment
from digits.data.batches import normalize
from digits.module import Classifier


def _sweep_dir(cwd: Path) -> Path:
    dirs = list((cwd / "outputs" / "multirun").glob("*/*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_summary_cli_reproduces_the_reference_table(tmp_path: Path) -> None:
    out = run_cli(["model=original"], cwd=tmp_path, module="digits.summary").stdout
    for name, shape, params in REFERENCE:
        shape_text = "[" + ", ".join(str(d) for d in shape) + "]"
        assert any(
            line.split()[0] == name and shape_text in line and line.endswith(f"{params:,}")
            for line in out.splitlines()
            if line.strip()
        ), name
    assert "Total params: 187,062" in out


@pytest.mark.slow  # the longest of the suite (~15-25 s on 2 cores)
def test_every_model_with_every_init_from_one_command(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "grid", n_train=200, n_test=50, header="grid", test="labelled")
    args = [
        "-m",
        f"data.dir={data}",
        "model=original,lenet,alexnet,ann,deotte",
        "init=default,normal,xavier,kaiming,zeros",
        *FAST,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "~logger",  # 25 jobs: no TensorBoard figures, this test is about building and training each pair
    ]
    run_cli(args, cwd=tmp_path, timeout=600)
    summary = pd.read_csv(_sweep_dir(tmp_path) / "summary.csv")
    assert len(summary) == 25
    assert set(summary["status"]) == {"completed"}, summary[["overrides", "status"]]
    assert summary["test_acc"].notna().all()


def test_zero_init_barely_learns_while_kaiming_does(tmp_path: Path, grid_dir: Path) -> None:
    args = ["-m", f"data.dir={grid_dir}", "init=zeros,kaiming", *FAST, "model=lenet", "trainer.max_epochs=3"]
    run_cli(args, cwd=tmp_path)
    summary = pd.read_csv(_sweep_dir(tmp_path) / "summary.csv").set_index("overrides")
    zeros, kaiming = summary.loc["init=zeros"], summary.loc["init=kaiming"]
    assert zeros["val_acc_best"] <= 0.2  # chance is 0.1: every unit computes the same thing
    assert kaiming["val_acc_best"] >= 0.8


def test_l1_penalty_is_the_sum_of_absolute_weights() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    module = Classifier(net, optimizer=torch.optim.SGD, l1=0.1)
    expected = sum(float(m.weight.detach().abs().sum()) for m in net)  # biases are not penalised
    assert math.isclose(float(module.l1_penalty().detach()), expected, rel_tol=1e-6)


def test_augment_is_seeded_label_preserving_geometry_and_keeps_the_background() -> None:
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    aug = Augment(rotate=15, translate=2, zoom=0.1)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # drawn per image
    assert float(a[:, :, :3, :].abs().max()) == 0.0  # far from the digit, the background stays 0
    mass = a.sum(dim=(1, 2, 3))
    assert float((mass / 64 - 1).abs().max()) < 0.25  # a warp, not a wipe: ink is kept up to the zoom
    identity = Augment(rotate=0, translate=0, zoom=0)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(identity, x, atol=1e-5)
    shift = Augment(rotate=0, translate=2, zoom=0)(x, torch.Generator().manual_seed(3))
    cols = torch.arange(28.0)
    centre = (shift.sum(dim=(1, 2)) * cols).sum(1) / shift.sum(dim=(1, 2, 3))
    assert float((centre - 13.5).abs().max()) <= 2.0 + 1e-4


def test_elastic_distortion_has_simards_strength_everywhere_and_leaves_the_affine_draws_alone() -> None:
    aug = Augment(rotate=0, translate=0, zoom=0, elastic=36, elastic_sigma=6)
    d = aug._displacement(4096, 28, 28, torch.Generator().manual_seed(0), torch.device("cpu")) * 14  # in pixels
    # Uniform [-1, 1] noise (variance 1/3) blurred by a normalised Gaussian k along each axis has standard deviation
    # sqrt(1/3) * sum(k^2), times alpha: Simard et al.'s field, at the border as at the centre.
    t = torch.arange(-18, 19, dtype=torch.float64)
    k = torch.exp(-(t**2) / 72)
    expected = 36 * (1 / 3) ** 0.5 * float((k / k.sum()).pow(2).sum())
    for where in (d[:, 14, 14], d[:, 0, 0], d[:, 27, 13]):
        assert abs(float(where.std()) / expected - 1) < 0.05
    assert abs(float(d[:, 14, 14, 0].mean())) < 0.05  # no drift
    # Neighbouring pixels move together (a smooth field, not per-pixel noise); far ones do not.
    corr = torch.corrcoef(torch.stack([d[:, 14, 14, 0], d[:, 14, 15, 0], d[:, 14, 0, 0]]))
    assert float(corr[0, 1]) > 0.95 and abs(float(corr[0, 2])) < 0.3

    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    bent = aug(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(bent, x, atol=1e-3) and float(bent[:, :, :2, :].abs().max()) == 0.0
    # The field is drawn after the affine numbers: a negligible one leaves the same affine warp, so runs without
    # elastic distortion draw (and give) what they gave before the knob existed.
    affine = Augment(rotate=10, translate=2, zoom=0.1)(x, torch.Generator().manual_seed(1))
    faint = Augment(rotate=10, translate=2, zoom=0.1, elastic=1e-3)(x, torch.Generator().manual_seed(1))
    assert torch.allclose(affine, faint, atol=1e-3) and not torch.equal(affine, faint)


def test_augmentation_applies_to_the_training_split_only(grid_dir: Path) -> None:
    dm = DigitsDataModule(dir=str(grid_dir), batch_size=32, eval_batch_size=100, augment=True, seed=0)
    dm.prepare_data()
    dm.setup()
    plain = DigitsDataModule(dir=str(grid_dir), batch_size=32, eval_batch_size=100, augment=False, seed=0)
    plain.setup()
    (xa, ya), (xp, yp) = next(iter(dm.train_dataloader())), next(iter(plain.train_dataloader()))
    assert torch.equal(ya, yp) and not torch.allclose(xa, xp)  # same order, warped pixels
    (xv, _) = next(iter(dm.val_dataloader()))
    assert torch.equal(xv, normalize(dm.val.images[:100]))


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path: Path, grid_dir: Path) -> None:
    """A run with seed 7 must agree to the last bit with a sweep's seed-7 job, in another process; the seed-8 job
    must not. (A sweep runs each configuration once, so the repeat is a run of its own.)"""
    knobs = [
        "data.augment=true",
        "data.zoom=0.1",
        "data.elastic=20",
        "l1=0.0001",
        "optim.weight_decay=0.0005",
        "model.dropout=0.3",
    ]
    args = [f"data.dir={grid_dir}", *knobs, *FAST, "trainer.limit_train_batches=4"]
    run_cli(["-m", "seed=7,8", *args], cwd=tmp_path)
    sweep = _sweep_dir(tmp_path)
    run_cli(["seed=7", *args, f"hydra.run.dir={tmp_path / 'again'}"], cwd=tmp_path)
    keys = ("val_acc_best", "test_acc", "train_loss_last", "val_loss_last", "epochs")
    results = [{k: metrics_of(d)[k] for k in keys} for d in (job_dir(sweep, 0), tmp_path / "again", job_dir(sweep, 1))]
    assert results[0] == results[1]
    assert results[0] != results[2]


def test_tail_average_is_the_mean_of_the_window_and_survives_a_resume() -> None:
    from types import SimpleNamespace

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    module = SimpleNamespace(net=net)
    avg, seen = TailAverage(epochs=2), []
    for epoch in range(4):  # max_epochs 4, window 2: the states after epochs 3 and 4
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p))
            net[1].running_mean.copy_(torch.randn(2))
            net[1].num_batches_tracked.fill_(10 * (epoch + 1))
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        avg.on_train_epoch_end(SimpleNamespace(current_epoch=epoch, max_epochs=4), module)  # type: ignore[arg-type]
        if epoch == 2:  # a resume between epochs 3 and 4 continues from the checkpointed sum
            resumed = TailAverage(epochs=2)
            resumed.load_state_dict(avg.state_dict())
            avg = resumed
    got = avg.average(net)
    assert got is not None and avg.count == 2
    for key, value in got.items():
        if key == "1.num_batches_tracked":
            assert value == 40  # a counter, not averaged
        else:
            torch.testing.assert_close(value, (seen[2][key] + seen[3][key]) / 2)
    assert TailAverage(epochs=2).average(net) is None  # stopped before the window: nothing to average


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16 autocast runs on any CPU, slowly
def test_averaged_weights_are_the_ones_tested_saved_and_served(tmp_path: Path, grid_dir: Path, precision: str) -> None:
    from digits.evaluate import net_from_checkpoint, precision_of, predict_probs, tested_checkpoint

    args = [f"data.dir={grid_dir}", *FAST, "trainer.max_epochs=3", "final_weights=average", "average_epochs=2"]
    args += [f"trainer.precision={precision}", "channels_last=true"]  # the two settings a recomputation must match
    proc = run_cli(args, cwd=tmp_path)
    (run,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    m = metrics_of(run)
    assert m["tested_weights"] == "average" and 0.0 < m["val_acc_average"] <= 1.0
    assert "(averaged; best epoch" in proc.stdout + proc.stderr
    assert tested_checkpoint(run) == run / "checkpoints" / "average.ckpt"
    net, cfg = net_from_checkpoint(run / "checkpoints" / "average.ckpt")
    assert precision_of(cfg) == precision and cfg["channels_last"] is True
    last, _ = net_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), last.state_dict().values()))
    # The saved average is what the run tested with: its test predictions are predictions.npz's.
    dm = DigitsDataModule(dir=str(grid_dir), batch_size=32, eval_batch_size=100, seed=0)
    dm.prepare_data()
    dm.setup()
    assert dm.test is not None
    with np.load(run / "predictions.npz") as saved:
        served = predict_probs(net, dm.test.images, precision=precision_of(cfg))
        torch.testing.assert_close(served, torch.from_numpy(saved["test_probs"]), rtol=0, atol=0)
    # And against a path that shares no code with predict_probs: Lightning's own validation loop, which wrote the
    # last epoch's val_loss. last.ckpt, evaluated as the tools evaluate it, gives the same loss.
    val = DigitsDataModule.of_run(cfg).val
    assert val is not None and val.labels is not None
    probs = predict_probs(last, val.images, precision=precision_of(cfg))
    loss = float(torch.nn.functional.nll_loss(torch.log(probs), val.labels))
    assert loss == pytest.approx(m["val_loss"][-1], rel=1e-5)


def test_the_best_recipe_trains(tmp_path: Path, grid_dir: Path) -> None:
    args = ["experiment=best", f"data.dir={grid_dir}", *FAST, "trainer.max_epochs=2", "data.batch_size=64"]
    run_cli(args, cwd=tmp_path)
    (run,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    assert metrics_of(run)["status"] == "completed" and metrics_of(run)["epochs"] == 2


def test_optim_grid_runs_as_one_command(tmp_path: Path, grid_dir: Path) -> None:
    args = [
        "experiment=optim_grid",
        f"data.dir={grid_dir}",
        *FAST,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "~logger",  # six jobs: TensorBoard and its figures are tested elsewhere
    ]
    proc = run_cli(args, cwd=tmp_path)
    summary = pd.read_csv(_sweep_dir(tmp_path) / "summary.csv")
    assert sorted(summary["overrides"]) == sorted(
        f"lr={lr},optim={o}" for o in ("sgd", "adam") for lr in ("0.001", "0.01", "0.1")
    )
    # Each job's dir says what it varied, as the summary and the figures' legends do.
    assert all(job.split("_", 1)[1] == name for job, name in zip(summary["job"], summary["overrides"]))
    assert "Sweep summary (6/6 jobs with a result)" in proc.stdout
    assert (ROOT / "conf" / "experiment" / "optim_grid.yaml").is_file()
