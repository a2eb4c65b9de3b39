"""MLflow's local store (SQLite under outputs/): a killed run resumed into the same MLflow run, and jobs started
together sharing a new store. Split from test_tracking.py so the two files run on both test workers at once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import FAST, metrics_of, run_cli
from test_tracking import SERIES, _csv_history, _histories, _same_history


def test_a_resumed_run_continues_its_mlflow_run(tmp_path: Path, grid_dir: Path) -> None:
    """Killed mid-epoch (SIGKILL) and resumed: the same MLflow run in the default local store under outputs/,
    every epoch once and equal to metrics.json, and the CSV beside it the same."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = tmp_path / "victim"
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=24"]
    base = [f"data.dir={grid_dir}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=3", "data.batch_size=32"]
    proc = run_cli([*base, "logger=[csv,mlflow]", *killer], tmp_path, check=False)
    assert proc.returncode == -signal.SIGKILL
    first = (run / "mlflow.json").read_text()
    run_cli([f"resume={run}", "callbacks.extra.killer=null"], tmp_path)
    assert (run / "mlflow.json").read_text() == first
    m = metrics_of(run)
    assert m["epochs"] == 3 and m["status"] == "completed"
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert r.info.run_name == "victim" and r.info.status == "FINISHED"
    logged = _histories(client, r.info.run_id, list(SERIES))
    frame = _csv_history(run)
    for tag, key in SERIES.items():
        _same_history(logged[tag], m[key])
        _same_history(frame[tag].dropna().to_dict(), m[key])


def _start_logger(args: tuple[str, str]) -> str:
    """One job's MLflow logger on a shared local store, as a job of hydra/launcher=parallel makes it."""
    from digits.logger import EpochMLFlowLogger

    run_dir, uri = args
    lg = EpochMLFlowLogger(run_dir, uri, "together")
    return lg._find_or_create_experiment()


def test_jobs_started_together_share_a_new_local_store(tmp_path: Path) -> None:
    """Three processes creating one new SQLite store and one experiment at the same moment: each gets the same
    experiment, none fails on the other's tables (MLflow's migrations are not safe to run twice at once)."""
    pytest.importorskip("mlflow")
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_start_logger, [(str(tmp_path / f"run{i}"), uri) for i in range(3)])
    assert len(set(ids)) == 1, ids


def test_a_copied_run_dir_resumed_never_logs_into_the_originals_mlflow_run(tmp_path: Path, grid_dir: Path) -> None:
    """The copy's mlflow.json names the original's MLflow run: the run's own tags (its dir, its fingerprint) say it
    is not the copy's, so the copy gets an MLflow run of its own, and the original's history is untouched. An
    edited mlflow.json that names an unrelated run is refused the same way."""
    pytest.importorskip("mlflow")
    import json
    import shutil

    from mlflow.tracking import MlflowClient

    run = tmp_path / "orig"
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=24"]
    base = [f"data.dir={grid_dir}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=3", "data.batch_size=32"]
    assert run_cli([*base, "logger=mlflow", *killer], tmp_path, check=False).returncode == -signal.SIGKILL
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / ".digits-claim").unlink(missing_ok=True)
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    original = json.loads((run / "mlflow.json").read_text())["run_id"]
    before = [m.step for m in client.get_metric_history(original, "val/acc")]
    proc = run_cli([f"resume={copy}", "callbacks.extra.killer=null"], tmp_path)
    assert "this run logs to a new MLflow run" in proc.stdout + proc.stderr
    assert [m.step for m in client.get_metric_history(original, "val/acc")] == before
    theirs = json.loads((copy / "mlflow.json").read_text())["run_id"]
    assert theirs != original
    steps = [m.step for m in client.get_metric_history(theirs, "val/acc")]
    assert steps and steps == list(range(steps[0], 4))  # the epochs the copy trained, once each
    assert client.get_run(theirs).data.tags["digits.run_dir"] == str(copy)

    other = tmp_path / "other"  # another run (another lr), its mlflow.json edited to name the original's MLflow run
    other_args = [*base[:1], f"hydra.run.dir={other}", *base[2:], "lr=0.05", "logger=mlflow", *killer]
    assert run_cli(other_args, tmp_path, check=False).returncode == -signal.SIGKILL
    (other / "mlflow.json").write_text((run / "mlflow.json").read_text())
    proc = run_cli([f"resume={other}", "callbacks.extra.killer=null"], tmp_path)
    assert "belongs to another run (another fingerprint)" in proc.stdout + proc.stderr
    assert [m.step for m in client.get_metric_history(original, "val/acc")] == before
