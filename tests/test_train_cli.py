"""The README's first command, run as a user would, on data folders made in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import FAST, make_folder, metrics_of, only_run_dir, run_cli

from digits.plots import read_curves


def test_the_readme_command_on_a_kaggle_folder(tmp_path: Path, kaggle_dir: Path) -> None:
    run_cli(["model=original", "optim=sgd", "lr=0.1", f"data.dir={kaggle_dir}", *FAST], cwd=tmp_path)
    run = only_run_dir(tmp_path)
    assert run.parent.parent == tmp_path / "outputs"  # outputs/<date>/<time>/
    m = metrics_of(run)
    for key in ("status", "epochs", "best_epoch", "val_acc_best", "test_acc", "train_seconds", "model", "optim"):
        assert key in m
    assert m["status"] == "completed" and m["epochs"] == 2 and m["model"] == "original" and m["optim"] == "sgd"
    assert m["lr"] == 0.1 and m["seed"] == 0 and m["test_acc"] is None  # Kaggle's test.csv is unlabelled
    assert 0.0 < m["val_acc_best"] <= 1.0 and m["best_epoch"] in (1, 2)

    sub = pd.read_csv(run / "submission.csv")
    assert list(sub.columns) == ["ImageId", "Label"]
    assert sub["ImageId"].tolist() == list(range(1, 201))
    answers = np.load(tmp_path / "kaggle_answers.npy")
    assert (sub["Label"].to_numpy() == answers).mean() > 0.9  # scored against a key outside the folder

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["lr"] == 0.1 and cfg["data"]["dir"] == str(kaggle_dir) and "${" not in (run / "config.yaml").read_text()

    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert "state_dict" in ckpt and ckpt["digits_config"]["model"]["_target_"].endswith("OriginalCNN")

    curves = read_curves(run)
    assert curves["epoch"].tolist() == [1, 2]
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert curves[tag].notna().all(), tag
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    assert {"val/acc_best", "train/loss", "val/acc"} <= set(acc.Tags()["scalars"])


def test_grid_header_with_labelled_test_reports_test_accuracy(tmp_path: Path, grid_dir: Path) -> None:
    run_cli([f"data.dir={grid_dir}", "model=lenet", "optim=adam", "lr=0.003", *FAST], cwd=tmp_path)
    run = only_run_dir(tmp_path)
    m = metrics_of(run)
    assert m["test_acc"] is not None and m["test_acc"] > 0.5
    assert not (run / "submission.csv").exists()
    assert m["data"]["n_train"] + m["data"]["n_val"] == 600 and m["data"]["n_val"] == 60


@pytest.mark.parametrize(
    "setup, expect",
    [
        (lambda d: None, "data folder does not exist"),
        (lambda d: d.mkdir(), "no train.csv"),
        (
            lambda d: (make_folder(d, 30, test=None), (d / "train.csv").write_text("label,pixel0\n1,2\n")),
            "pixel columns",
        ),
        (
            lambda d: (
                make_folder(d, 30, test=None),
                (d / "train.csv").write_text((d / "train.csv").read_text().replace("\n3,", "\n3,x", 1)),
            ),
            "is not an integer",
        ),
        (lambda d: (make_folder(d, 30, test=None), (d / "test.csv").write_bytes(b"\x00\x01" * 50)), "binary"),
    ],
    ids=["missing folder", "missing train.csv", "narrow image", "non-numeric cell", "binary test.csv"],
)
def test_bad_data_is_one_line_and_leaves_no_run_dir(tmp_path: Path, setup, expect: str) -> None:
    data = tmp_path / "bad"
    setup(data)
    proc = run_cli([f"data.dir={data}", *FAST], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("digits: error: ") and expect in lines[0] and "Traceback" not in proc.stderr
    assert not list((tmp_path / "outputs").glob("*/*")) if (tmp_path / "outputs").exists() else True


@pytest.mark.parametrize(
    "args, expect",
    [
        (["model=nope"], "unknown model 'nope'; valid: alexnet, ann, deotte, lenet, original"),
        (["optim=rmsprop"], "unknown optim 'rmsprop'; valid: adam, adamw, sgd"),
        (["init=orthogonal"], "unknown init 'orthogonal'"),
        (["no_such_key=1"], "unknown key no_such_key"),
        (["lr=fast"], "lr must be a number"),
        (["final_weights=average", "average_epochs=0"], "average_epochs=0: must be >= 1"),
        (["logger=null"], "write ~logger instead"),
    ],
)
def test_bad_overrides_are_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    proc = run_cli(args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").glob("*/*"))


def test_existing_run_dir_is_never_overwritten(tmp_path: Path, kaggle_dir: Path) -> None:
    target = tmp_path / "outputs" / "mine"
    run_cli([f"data.dir={kaggle_dir}", f"hydra.run.dir={target}", *FAST, "trainer.max_epochs=1"], cwd=tmp_path)
    before = (target / "metrics.json").read_bytes(), (target / ".hydra" / "config.yaml").read_bytes()
    proc = run_cli([f"data.dir={kaggle_dir}", f"hydra.run.dir={target}", *FAST], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert ((target / "metrics.json").read_bytes(), (target / ".hydra" / "config.yaml").read_bytes()) == before


def test_unwritable_output_dir_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    proc = run_cli(["hydra.run.dir=/proc/digits-run"], cwd=tmp_path, check=False)  # /proc refuses even root
    assert proc.returncode == 2 and "output dir is not writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli([f"hydra.run.dir={blocker}/run"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


def test_a_nearly_full_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil as _shutil

    from digits import cli_args
    from digits.errors import UserError

    monkeypatch.setattr(_shutil, "disk_usage", lambda p: _shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(UserError, match="MiB free on the output disk"):
        cli_args.check_writable(tmp_path / "run")
    monkeypatch.undo()
    cli_args.check_writable(tmp_path / "run")  # plenty of room: no error


def test_the_command_writes_where_the_composed_config_says(tmp_path: Path) -> None:
    from digits.cli_args import prepare

    _, run = prepare(["experiment=best", f"hydra.run.dir={tmp_path / 'run'}"])  # a single run
    assert run is not None and run.dir.path == tmp_path / "run" and run.dir.owned() and not run.sweep
    run.done()
    assert not (tmp_path / "run").exists()  # made by this process, given up without results: gone
    _, sweep = prepare(["experiment=optim_grid", f"hydra.sweep.dir={tmp_path / 'grid'}"])  # a multirun by its file
    assert sweep is not None and sweep.dir.path == tmp_path / "grid" and sweep.sweep
    sweep.done()


def test_a_run_through_a_symlinked_outputs_dir_writes_its_record(tmp_path: Path, grid_dir: Path) -> None:
    """outputs/ may link elsewhere (a bigger disk); the record's checkpoint path is still found inside the run dir."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "outputs").symlink_to(elsewhere)
    run_cli([f"data.dir={grid_dir}", *FAST], cwd=tmp_path)
    (record,) = list(elsewhere.glob("*/*/metrics.json"))
    metrics = metrics_of(record.parent)
    assert metrics["status"] == "completed" and metrics["best_checkpoint"] == "checkpoints/best.ckpt"
