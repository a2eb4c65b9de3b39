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
