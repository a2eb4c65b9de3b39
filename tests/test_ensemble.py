"""The ensemble: mean softmax of runs on one test split, chosen by validation accuracy, submission for Kaggle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FAST, job_dir, metrics_of, run_cli

from digits import runs

pytestmark = pytest.mark.precision  # ensembles recompute softmax from checkpoints


def _sweep(cwd: Path, data: Path, seeds: str) -> Path:
    run_cli(["-m", f"data.dir={data}", f"seed={seeds}", *FAST, "trainer.limit_train_batches=3"], cwd=cwd)
    (sweep,) = list((cwd / "outputs" / "multirun").glob("*/*"))
    return sweep


def test_ensemble_of_a_labelled_sweep(tmp_path: Path, grid_dir: Path) -> None:
    sweep = _sweep(tmp_path, grid_dir, "0,1,2")
    out = tmp_path / "ens"
    # A run named twice, itself and through its sweep, counts once.
    proc = run_cli([str(sweep), str(job_dir(sweep, 1)), "--out", str(out)], cwd=tmp_path, module="digits.ensemble")
    result = json.loads((out / "ensemble.json").read_text())
    assert result["n_members"] == 3 and "ensemble of 3" in proc.stdout
    probs = [np.load(job_dir(sweep, i) / "predictions.npz") for i in range(3)]
    mean = np.mean([p["test_probs"] for p in probs], axis=0)
    labels = probs[0]["test_labels"]
    assert result["test_acc"] == float((mean.argmax(1) == labels).mean())
    for m, p in zip(sorted(result["members"], key=lambda m: m["run"]), probs):
        assert m["test_acc"] == float((p["test_probs"].argmax(1) == labels).mean())
    assert not (out / "submission.csv").exists()

    # --top keeps the best by validation accuracy, never by test accuracy.
    top = tmp_path / "top"
    run_cli([str(sweep), "--top", "2", "--out", str(top)], cwd=tmp_path, module="digits.ensemble")
    chosen = {Path(m["run"]).name for m in json.loads((top / "ensemble.json").read_text())["members"]}
    vals = {job_dir(sweep, i).name: runs.tested_val_acc(metrics_of(job_dir(sweep, i))) for i in range(3)}
    assert chosen == set(sorted(vals, key=lambda k: -vals[k])[:2])

    again = run_cli([str(sweep), "--out", str(out)], cwd=tmp_path, module="digits.ensemble", check=False)
    assert again.returncode == 2 and "already holds results" in again.stderr


def test_ensemble_writes_a_kaggle_submission(tmp_path: Path, kaggle_dir: Path) -> None:
    sweep = _sweep(tmp_path, kaggle_dir, "0,1")
    out = tmp_path / "ens"
    run_cli([str(job_dir(sweep, 0)), str(job_dir(sweep, 1)), "--out", str(out)], cwd=tmp_path, module="digits.ensemble")
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.columns) == ["ImageId", "Label"] and sub["ImageId"].tolist() == list(range(1, 201))
    assert sub["Label"].between(0, 9).all()
    assert json.loads((out / "ensemble.json").read_text())["test_acc"] is None


def test_top_ranks_by_the_validation_accuracy_of_the_tested_weights(tmp_path: Path) -> None:
    """A run tested with its last weights is ranked by its last epoch, not by a better epoch it did not keep."""
    labels = np.arange(10) % 10
    records = {
        "lucky_peak": {"tested_weights": "last", "val_acc": [0.99, 0.90], "val_acc_best": 0.99},
        "steady": {"tested_weights": "last", "val_acc": [0.93, 0.95, None], "val_acc_best": 0.95},
        "averaged": {"tested_weights": "average", "val_acc_average": 0.97, "val_acc_best": 0.98},
        "best_epoch": {"tested_weights": "best", "val_acc": [0.94, 0.92], "val_acc_best": 0.94},
    }
    for name, record in records.items():
        run = tmp_path / name
        run.mkdir()
        probs = np.eye(10, dtype=np.float32)[labels]
        np.savez(run / "predictions.npz", test_probs=probs, test_labels=labels, test_fingerprint=np.array("f00d"))
        (run / "metrics.json").write_text(json.dumps({"status": "completed", **record}))
    out = tmp_path / "top"
    proc = run_cli(
        [*(str(tmp_path / n) for n in records), "--top", "2", "--out", str(out)], cwd=tmp_path, module="digits.ensemble"
    )
    members = json.loads((out / "ensemble.json").read_text())["members"]
    assert [Path(m["run"]).name for m in members] == ["averaged", "steady"]
    assert [m["val_acc"] for m in members] == [0.97, 0.95] and "val 97.00%" in proc.stdout


def test_members_must_share_a_test_set(tmp_path: Path) -> None:
    members = []
    for name, fingerprint in (("a", "f00d"), ("b", "beef")):
        run = tmp_path / name
        run.mkdir()
        probs = np.full((5, 10), 0.1, dtype=np.float32)
        np.savez(run / "predictions.npz", test_probs=probs, test_fingerprint=np.array(fingerprint))
        (run / "metrics.json").write_text(json.dumps({"status": "completed", "val_acc_best": 0.5}))
        members.append(str(run))
    proc = run_cli([*members, "--out", str(tmp_path / "e")], cwd=tmp_path, module="digits.ensemble", check=False)
    assert proc.returncode == 2 and "different test sets" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_select_builds_the_ensemble_on_a_shared_validation_split(tmp_path: Path, grid_dir: Path) -> None:
    run_cli(
        ["-m", f"data.dir={grid_dir}", "data.split_seed=0", "seed=0,1,2", *FAST, "trainer.precision=32-true"],
        cwd=tmp_path,
    )
    (sweep,) = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    out = tmp_path / "sel"
    proc = run_cli([str(sweep), "--select", "3", "--out", str(out)], cwd=tmp_path, module="digits.ensemble")
    result = json.loads((out / "ensemble.json").read_text())
    steps = result["selection"]["steps"]
    assert [Path(s["run"]) for s in steps] == [Path(m["run"]) for m in result["members"]]
    assert sorted(Path(s["run"]).name for s in steps) == sorted(job_dir(sweep, i).name for i in range(3))
    n_val = metrics_of(job_dir(sweep, 0))["data"]["n_val"]
    assert result["selection"]["val_images"] == n_val > 0 and "select 1:" in proc.stdout
    # Each member's validation accuracy, recomputed from its tested weights, is the one its training logged (there
    # as a float32: compare counts of images).
    for s in steps:
        assert round(s["member_val_acc"] * n_val) == round(runs.tested_val_acc(metrics_of(Path(s["run"]))) * n_val)
    # Greedy: the first member alone is the ensemble with the lowest log loss, and each step's ensemble is scored.
    assert steps[0]["member_val_log_loss"] == min(s["member_val_log_loss"] for s in steps)
    assert steps[0]["ensemble_val_log_loss"] == steps[0]["member_val_log_loss"]

    # A run holding out other images cannot be scored with them: one line, exit 2, nothing written.
    run_cli([f"data.dir={grid_dir}", "seed=5", *FAST, "trainer.precision=32-true"], cwd=tmp_path)
    (other,) = [d for d in (tmp_path / "outputs").glob("20*/*") if d.is_dir()]
    bad = run_cli(
        [str(sweep), str(other), "--select", "2", "--out", str(tmp_path / "bad")],
        cwd=tmp_path,
        module="digits.ensemble",
        check=False,
    )
    assert bad.returncode == 2 and "different validation images" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    both = run_cli([str(sweep), "--top", "2", "--select", "2"], cwd=tmp_path, module="digits.ensemble", check=False)
    assert both.returncode == 2 and "give one" in both.stderr
