"""Runs tracked where teams look: a CSV file and MLflow beside TensorBoard, each holding metrics.json's numbers.

The MLflow tests talk to a real `mlflow server` (SQLite backend) started here on 127.0.0.1 and read the runs back
with MlflowClient; the UI is read by headless Chromium. They skip, saying why, where mlflow or chromium is absent.
"""

from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import FAST, job_dir, metrics_of, one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digits.loggers.csv_file import _EpochRows

SERIES = {"train/loss": "train_loss", "train/acc": "train_acc", "val/loss": "val_loss", "val/acc": "val_acc"}


def _same_history(logged: dict[int, float], record: list[float | None]) -> None:
    """A logger's history of one metric (step -> value) is the run's per-epoch list, exactly, at step = epoch."""
    expected = {epoch: v for epoch, v in enumerate(record, start=1) if v is not None}
    assert logged == expected


def _running_max(values: list[float | None]) -> dict[int, float]:
    out, best = {}, -math.inf
    for epoch, v in enumerate(values, start=1):
        if v is not None:
            best = max(best, v)
            out[epoch] = best
    return out


# --- logger=csv ---------------------------------------------------------------------------------------------------
def _csv_history(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert list(frame["step"]) == list(range(1, len(frame) + 1))  # one row per epoch, step = the epoch
    return frame.set_index("step")


def test_csv_rows_are_the_runs_epochs(tmp_path: Path, grid_dir: Path) -> None:
    """logger=csv alone: one row per epoch, TensorBoard's metric names, metrics.json's values; digits.report still
    draws the run's curves (from metrics.json: there are no event files)."""
    run = tmp_path / "run"
    run_cli([f"data.dir={grid_dir}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=3", "logger=csv"], tmp_path)
    m = metrics_of(run)
    frame = _csv_history(run)
    assert len(frame) == m["epochs"] == 3
    for tag, key in SERIES.items():
        _same_history(frame[tag].dropna().to_dict(), m[key])
    assert frame["val/acc_best"].dropna().to_dict() == _running_max(m["val_acc"])
    assert frame["test/acc"].dropna().to_dict() == {3: m["test_acc"]}  # the test score on the last epoch's row
    assert not list(run.glob("events.out.tfevents.*"))
    run_cli([str(run)], tmp_path, module="digits.report")
    assert (run / "curves.png").stat().st_size > 10_000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    epochs=st.integers(1, 6),
    killed_after=st.integers(0, 6),
    values=st.lists(st.floats(0, 10, allow_nan=False), min_size=24, max_size=24),
)
def test_a_resumed_csv_keeps_the_epochs_its_checkpoint_holds(
    tmp_path: Path, epochs: int, killed_after: int, values: list[float]
) -> None:
    """Any run killed after any epoch (its row perhaps half-written) and resumed from the checkpoint of the epoch
    before: every epoch's row once, the last values written for it, nothing from the killed epoch left over."""
    log_dir = str(tmp_path / f"csv-{epochs}-{killed_after}-{hash(tuple(values))}")
    vals = iter(values)
    first = _EpochRows(log_dir)
    done = min(killed_after, epochs)
    for epoch in range(1, done + 2):  # the killed process logged the validation of one more epoch
        first.log_metrics({"val/acc": next(vals)}, epoch)
        if epoch <= done:
            first.log_metrics({"train/loss": next(vals)}, epoch)
        first.save()
    kept = {e: dict(r) for e, r in first.rows.items() if e <= done}
    second = _EpochRows(log_dir)  # the resume, from the checkpoint of epoch `done`
    for epoch in range(done + 1, epochs + 1):
        row = {"val/acc": next(vals), "train/loss": next(vals)}
        second.log_metrics({"val/acc": row["val/acc"]}, epoch)
        second.log_metrics({"train/loss": row["train/loss"]}, epoch)
        second.save()
        kept[epoch] = row
    if done < epochs:
        frame = pd.read_csv(Path(log_dir) / "metrics.csv").set_index("step")
        assert {e: r.dropna().to_dict() for e, r in frame.iterrows()} == kept


# --- logger=mlflow ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` with a SQLite backend and its own artifact store, on a free port of 127.0.0.1."""
    exe = shutil.which("mlflow")
    if exe is None:
        pytest.skip('needs MLflow: pip install -e ".[track]"')
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    server = subprocess.Popen(
        [
            *[exe, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--workers", "1"],
            *["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),  # noqa: SIM115 (closed with the process)
    )
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(600):  # it creates its tables first: up to a minute on a busy 2-core machine
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited {server.returncode}: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("mlflow server did not answer /health within two minutes")
    yield uri
    server.terminate()
    server.wait(timeout=30)


def _histories(client, run_id: str, keys: list[str]) -> dict[str, dict[int, float]]:
    out = {}
    for key in keys:
        history = client.get_metric_history(run_id, key)
        steps = [h.step for h in history]
        assert len(steps) == len(set(steps)), (key, steps)  # every epoch once
        out[key] = {h.step: h.value for h in history}
    return out


def test_a_sweep_logged_to_a_real_mlflow_server(tmp_path: Path, grid_dir: Path, mlflow_server: str) -> None:
    """Two jobs, two MLflow runs named by their job dirs, in an experiment named by the sweep; parameters are the
    resolved config; every metric's history is the job's metrics.json; artifacts and tags are there; the UI, in a
    real browser, compares them."""
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "outputs" / "opt-sweep"
    args = [f"data.dir={grid_dir}", *FAST, "logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}"]
    run_cli(["-m", *args, "optim=sgd,adam", f"hydra.sweep.dir={sweep}"], tmp_path)

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("opt-sweep")  # the sweep dir, under outputs/
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == ["0_optim=sgd", "1_optim=adam"]
    for num, optim in enumerate(("sgd", "adam")):
        job = job_dir(sweep, num)
        m = metrics_of(job)
        (r,) = [r for r in found if r.info.run_name == job.name]
        assert r.info.status == "FINISHED"
        tags = r.data.tags
        assert tags["status"] == m["status"] == "completed"
        assert (tags["precision"], tags["device"]) == (m["precision"], m["device"])
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", tags["git_commit"])
        assert tags["digits.run_dir"] == str(job.resolve())
        params = r.data.params
        assert params["optim._target_"] == ("torch.optim.SGD" if optim == "sgd" else "torch.optim.Adam")
        assert params["lr"] == "0.1" and params["trainer.max_epochs"] == "2" and params["data.dir"] == str(grid_dir)
        logged = _histories(client, r.info.run_id, [*SERIES, "val/acc_best", "test/acc", "test/loss"])
        for tag, key in SERIES.items():
            _same_history(logged[tag], m[key])
        assert logged["val/acc_best"] == _running_max(m["val_acc"])
        assert logged["test/acc"] == {m["epochs"]: m["test_acc"]}
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        figures = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
        assert {"config.yaml", "metrics.json", "figures"} <= artifacts
        assert {"figures/curves.png", "figures/confusion.png", "figures/misclassified.png"} <= figures
        assert (job / "mlflow.json").is_file()
    _the_ui_compares(tmp_path, mlflow_server, experiment.experiment_id, found)


def _the_ui_compares(tmp_path: Path, uri: str, experiment_id: str, found: list) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("the UI check needs Debian's chromium (apt-get install chromium)")
    ids = ",".join(f'"{r.info.run_id}"' for r in found)
    url = f'{uri}/#/compare-runs?runs=[{ids}]&experiments=["{experiment_id}"]'
    page = subprocess.run(
        [
            *[chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
            *["--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'b'}"],
            *["--virtual-time-budget=20000", "--dump-dom", url],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    text = " ".join(re.sub(r"<[^>]*>", " ", page).split())
    assert "Comparing 2 Runs" in text and "0_optim=sgd" in text and "1_optim=adam" in text, text[-2000:]


def test_a_server_that_does_not_answer_is_one_line_before_training(tmp_path: Path, grid_dir: Path) -> None:
    pytest.importorskip("mlflow")
    run = tmp_path / "run"
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    proc = run_cli(
        [f"data.dir={grid_dir}", f"hydra.run.dir={run}", *FAST, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"],
        tmp_path,
        check=False,
    )
    one_line_error(proc, f"logger.mlflow.tracking_uri={uri}: no MLflow server answers")
    assert not run.exists() and "epoch 1" not in proc.stdout + proc.stderr
