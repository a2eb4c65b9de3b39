"""MLflow's local store (SQLite under outputs/): a killed run resumed into the same MLflow run, and jobs started
together sharing a new store. Split from test_tracking.py so the two files run on both test workers at once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import FAST, metrics_of, one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    from digits.loggers.mlflow_run import EpochMLFlowLogger

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


@pytest.fixture(scope="module")
def killed_csv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run with logger=csv killed in its third epoch: csv/metrics.csv holds two epochs' rows."""
    from helpers import make_folder

    cwd = tmp_path_factory.mktemp("csvrun")
    data = make_folder(cwd / "grid", header="grid", test="labelled")
    run = cwd / "run"
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=40"]
    base = [f"data.dir={data}", f"hydra.run.dir={run}", *FAST, "trainer.max_epochs=3", "data.batch_size=32"]
    assert run_cli([*base, "logger=csv", *killer], cwd, check=False).returncode == -signal.SIGKILL
    assert len((run / "csv" / "metrics.csv").read_text().splitlines()) == 3  # header and two epochs
    return cwd, run


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    row=st.integers(1, 2),
    where=st.sampled_from(["step", "cell", "header", "width"]),
    junk=st.from_regex(r"[a-z][a-z0-9.]{0,6}", fullmatch=True),
)
def test_a_damaged_csv_log_stops_a_resume_in_one_line(
    killed_csv_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, row: int, where: str, junk: str
) -> None:
    """Any damage to the rows a resume would keep (a step that is no epoch number, a cell that is no number,
    another header, a row of another width) is one line naming the file and row, before anything is written."""
    import shutil

    cwd, run = killed_csv_run
    copy = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(run, copy)
    (copy / ".digits-claim").unlink(missing_ok=True)
    path = copy / "csv" / "metrics.csv"
    lines = path.read_text().splitlines()
    cells = lines[row].split(",")
    if where == "step":
        cells[0] = junk
    elif where == "cell":
        cells[-1] = junk
    elif where == "width":
        cells.append("1")
    if where == "header":
        lines[0] = junk + lines[0][4:]
    else:
        lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    proc = run_cli([f"resume={copy}", "callbacks.extra.killer=null"], cwd, check=False)
    one_line_error(proc, "csv/metrics.csv")
    assert path.read_bytes() == before and not (copy / "metrics.json").exists()


def test_a_truncated_csv_log_resumes_and_says_what_it_lacks(killed_csv_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    cwd, run = killed_csv_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / ".digits-claim").unlink(missing_ok=True)
    path = copy / "csv" / "metrics.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")  # epoch 2's row cut off
    proc = run_cli([f"resume={copy}", "callbacks.extra.killer=null"], cwd)
    assert "has no row for epoch 2 of the run" in proc.stdout + proc.stderr


def test_a_tracking_uri_naming_another_runs_file_writes_nothing_there(tmp_path: Path, grid_dir: Path) -> None:
    """sqlite:///<another run>/metrics.json is no MLflow store: one line, and nothing (not even a lock file) appears
    in that run's dir or anywhere else."""
    pytest.importorskip("mlflow")
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text('{"status": "completed"}\n')
    before = sorted(p.name for p in other.iterdir())
    uri = f"logger.mlflow.tracking_uri=sqlite:///{other / 'metrics.json'}"
    proc = run_cli([f"data.dir={grid_dir}", *FAST, "logger=mlflow", uri], tmp_path, check=False)
    one_line_error(proc, "not a SQLite database")
    assert sorted(p.name for p in other.iterdir()) == before and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "setting, expect",
    [
        ("logger.mlflow.tracking_uri=sqlit:///x.db", "not a tracking URI MLflow knows"),
        ("logger.mlflow.tracking_uri=postgresql://u:pw@127.0.0.1:1/db", "cannot connect (OperationalError"),
        (f"logger.mlflow.experiment_name={'x' * 600}", "at most 500 characters (MLflow's limit), got 600"),
    ],
    ids=["typo", "no server", "long name"],
)
def test_a_tracking_setting_mlflow_cannot_use_is_one_line_naming_its_key(
    tmp_path: Path, grid_dir: Path, setting: str, expect: str
) -> None:
    """Each names the key that is wrong and why, before anything is written: not Hydra's "Error in call to target"
    cut mid-sentence, not MLflow's minutes of retries, not a name blamed on the tracking URI after MLflow's INFO
    lines; and never the password."""
    pytest.importorskip("mlflow")
    proc = run_cli([f"data.dir={grid_dir}", *FAST, "logger=mlflow", setting], tmp_path, check=False)
    one_line_error(proc, f"{setting.split('=')[0]}")
    assert expect in proc.stderr and "pw@" not in proc.stderr + proc.stdout
    assert not (tmp_path / "outputs").exists()


@settings(max_examples=60, deadline=None)
@given(scheme=st.from_regex(r"[a-z][a-z0-9+.-]{0,12}", fullmatch=True))
def test_a_tracking_uri_is_accepted_only_with_a_scheme_mlflow_logs_to(scheme: str) -> None:
    """Any scheme: one MLflow can log to passes the scheme check (a database is then connected to, a server asked
    for its health), any other is one line naming the key."""
    from digits.errors import UserError
    from digits.loggers import mlflow_run

    base = scheme.split("+", 1)[0]
    uri = f"{scheme}://127.0.0.1:1/x"
    if base in mlflow_run.SCHEMES:
        try:
            mlflow_run.check_server(uri, timeout=1)
        except UserError as e:
            assert "not a tracking URI" not in str(e)
    else:
        with pytest.raises(UserError, match="not a tracking URI MLflow knows"):
            mlflow_run.check_server(uri)
