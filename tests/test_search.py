"""hydra/sweeper=search: Optuna (>= 4) behind the same command, a study that survives a kill, pruning, and several
workers on one study on a real PostgreSQL server (started by the test, skipped with the reason when absent)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import FAST, finish, metrics_of, one_line_error, run_cli, start_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

optuna = pytest.importorskip("optuna", reason="the search needs optuna: pip install -e '.[sweep]'")


def _study(url: str, name: str = "digits"):
    return optuna.load_study(study_name=name, storage=url)


def _states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def _search(grid_dir: Path, sweep: Path, *more: str, lr: str = "choice(0.05,0.1)", dropout: str = "0.0") -> list[str]:
    return [
        "-m",
        "hydra/sweeper=search",
        f"data.dir={grid_dir}",
        *FAST,
        "model=lenet",
        f"hydra.sweeper.params={{lr: '{lr}', optim: sgd, model.dropout: '{dropout}'}}",
        f"hydra.sweep.dir={sweep}",
        *more,
    ]


def test_a_search_killed_with_sigkill_continues_where_it_stopped(tmp_path: Path, grid_dir: Path) -> None:
    sweep = tmp_path / "search"
    kill = f"+callbacks.extra.killer={{_target_: killer.SignalOnce, step: 12, marker: '{tmp_path / 'fired'}'}}"
    args = _search(grid_dir, sweep, "hydra.sweeper.n_trials=3", kill, lr="interval(0.01, 0.2)")
    proc = start_cli(args, tmp_path)
    finish(proc, timeout=300)
    assert proc.returncode == -signal.SIGKILL and (tmp_path / "fired").exists()
    url = f"sqlite:///{sweep / 'study.db'}"
    assert _states(_study(url)) == {"running": 1}  # trial 0, killed in its second epoch

    run_cli(args, cwd=tmp_path)
    study = _study(url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3  # n_trials counts the study's total, the killed trial included
    # The re-run's sampler starts from the same seed and proposes trial 0's point again: that proposal is refused as
    # a repeat (never run, never counted), so every trial that ran is a new point.
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 3
    assert all("repeat_of" in t.user_attrs for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir() and (d / "metrics.json").is_file())
    assert [j.split("_")[0] for j in jobs] == ["0", "1", "2"]  # the killed trial went on in its own dir
    first = sweep / jobs[0]
    assert metrics_of(first)["status"] == "completed" and "resuming from" in (first / "train.log").read_text()
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == study.best_value and results["trials"]["complete"] == 3
    assert (sweep / "optimization_history.png").is_file()

    before = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    run_cli(args, cwd=tmp_path)  # a finished search re-run: nothing trains again
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")} == before
    assert len(_study(url).trials) == len(study.trials)


def _pruning_seed() -> int:
    """A RandomSampler seed that draws at least three good rates among the first four trials (the pruner's
    startup) and a hopeless one after them: then pruning must happen. The space is the test's: lr, then a dropout
    too small to matter, which makes every trial a new point (a search refuses repeats)."""
    space = {
        "lr": optuna.distributions.CategoricalDistribution([0.1, 1e-7]),
        "model.dropout": optuna.distributions.FloatDistribution(0.0, 0.01),
    }
    for seed in range(100):
        s = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        lrs = [s.ask(space).params["lr"] for _ in range(6)]
        if lrs[:4].count(0.1) >= 3 and 1e-7 in lrs[4:]:
            return seed
    raise AssertionError("no seed")


def test_pruning_stops_hopeless_trials_and_they_are_never_the_best(tmp_path: Path, grid_dir: Path) -> None:
    sweep = tmp_path / "search"
    seed = _pruning_seed()
    args = _search(
        grid_dir,
        sweep,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler",
        "~hydra.sweeper.sampler.n_startup_trials",
        f"hydra.sweeper.sampler.seed={seed}",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=6",
        lr="choice(0.1,1e-7)",
        dropout="interval(0.0, 0.01)",
    )
    run_cli(args, cwd=tmp_path)
    study = _study(f"sqlite:///{sweep / 'study.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.params["lr"] == 1e-7 for t in pruned)
    records = {d.name: metrics_of(d) for d in sweep.iterdir() if (d / "metrics.json").is_file()}
    pruned_runs = [name for name, m in records.items() if m["status"] == "pruned"]
    assert len(pruned_runs) == len(pruned)
    assert all(records[n]["epochs"] < 4 and len(records[n]["val_acc"]) == records[n]["epochs"] for n in pruned_runs)
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert "pruned" not in summary[1]  # never the first row
    assert "pruned" in (sweep / "summary.md").read_text()
    proc = run_cli([str(sweep / pruned_runs[0])], cwd=tmp_path, module="digits.ensemble", check=False)
    one_line_error(proc, "is a pruned run, not a result")


def test_a_storage_that_fails_is_one_line_before_any_trial(tmp_path: Path, grid_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    sweep = tmp_path / "s"
    storage = f"hydra.sweeper.storage=postgresql://user:secret@127.0.0.1:{port}/db"
    proc = run_cli(_search(grid_dir, sweep, storage), cwd=tmp_path, check=False)
    one_line_error(proc, "cannot open the study 'digits' in postgresql://user:***@127.0.0.1")
    assert "secret" not in proc.stderr and not sweep.exists()


def test_another_search_under_a_studys_name_is_refused(tmp_path: Path, grid_dir: Path) -> None:
    db = tmp_path / "shared.db"
    first = _search(grid_dir, tmp_path / "a", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{db}")
    run_cli(first, cwd=tmp_path)
    other = _search(
        grid_dir,
        tmp_path / "b",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.storage=sqlite:///{db}",
        lr="choice(0.1,0.2)",
    )
    proc = run_cli(other, cwd=tmp_path, check=False)
    one_line_error(proc, "belongs to another search")
    assert len(_study(f"sqlite:///{db}").trials) == 1


# --- several workers on one study, on a real PostgreSQL server ---------------------------------------------------
def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@dataclass
class PostgresServer:
    url: str
    start: list[str]  # the command that starts it again, on the same port
    stop: list[str]  # the command that stops it at once, as a crash would


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> str:
    return postgres_server.url


@pytest.fixture
def postgres_server(tmp_path: Path):
    """A throwaway PostgreSQL cluster on 127.0.0.1 run as the `postgres` user (initdb and the server refuse root),
    with a password, so a wrong one can be tried."""
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("runuser") is None:
        pytest.skip("needs Debian's postgresql (apt-get install postgresql) and runuser")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1's driver for postgresql:// URLs)
    except ImportError:
        pytest.skip("needs psycopg: pip install 'psycopg[binary]'")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="digits-pg-"))  # pytest's tmp dirs are closed to other users
    os.chmod(root, 0o755)
    (root / "pw").write_text("digits-pw\n")
    shutil.chown(root, "postgres")
    shutil.chown(root / "pw", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run(
        [
            *as_pg,
            str(bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "--auth=md5",
            f"--pwfile={root / 'pw'}",
        ],
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        pytest.skip(f"initdb failed here: {init.stderr.strip()[:200]}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg_ctl = [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(root / "data")]
    start = [*pg_ctl, "-l", str(root / "log"), "-w", "start", "-o", f"-p {port} -h 127.0.0.1 -k {root}"]
    started = subprocess.run(start, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr + (root / "log").read_text()
    server = PostgresServer(
        f"postgresql://postgres:digits-pw@127.0.0.1:{port}/postgres", start, [*pg_ctl, "-m", "immediate", "stop"]
    )
    try:
        yield server
    finally:
        subprocess.run(server.stop, capture_output=True)


def test_two_workers_share_one_study_on_postgresql(
    tmp_path: Path, grid_dir: Path, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL holds a password: given through an environment variable, it is in no file and no line of output.
    monkeypatch.setenv("DIGITS_TEST_STORAGE", postgres)
    storage = "hydra.sweeper.storage=${oc.env:DIGITS_TEST_STORAGE}"
    shared = [storage, "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=6"]
    procs = [
        start_cli(_search(grid_dir, tmp_path / f"w{i}", *shared, lr="interval(0.01, 0.2)"), tmp_path) for i in range(2)
    ]
    outputs = [finish(p, timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert not any("digits-pw" in out + err for out, err in outputs)
    for w in ("w0", "w1"):
        for f in (tmp_path / w).rglob("*"):
            assert not f.is_file() or b"digits-pw" not in f.read_bytes(), f
    study = _study(postgres, "shared")
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 6 and len({t.number for t in done}) == 6
    # Both workers' samplers start from the same seed: the later of two equal proposals is refused as a repeat.
    assert len({tuple(sorted(t.params.items())) for t in done}) == 6
    runs = [d for w in ("w0", "w1") for d in (tmp_path / w).iterdir() if (d / "metrics.json").is_file()]
    assert len(runs) == 6  # the union of the two workers' jobs is n_trials
    results = [yaml.safe_load((tmp_path / w / "optimization_results.yaml").read_text()) for w in ("w0", "w1")]
    assert results[0]["best_trial"] == results[1]["best_trial"] == study.best_trial.number
    assert "digits-pw" not in json.dumps(results)

    wrong = postgres.replace("digits-pw", "nope")
    proc = run_cli(_search(grid_dir, tmp_path / "w2", f"hydra.sweeper.storage={wrong}"), cwd=tmp_path, check=False)
    one_line_error(proc, "cannot open the study")


def test_a_storage_lost_mid_search_is_one_line_and_the_same_command_continues(
    tmp_path: Path, grid_dir: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL server stops (as a crash would) while trial 0 trains: the job finishes and keeps its record
    (pruning is advice), the search ends in one line without the password; once the server is back, the same command
    reports trial 0's finished result without training it again, and runs the rest."""
    monkeypatch.setenv("DIGITS_TEST_STORAGE", postgres_server.url)
    script = tmp_path / "stop.sh"
    script.write_text(shlex.join(postgres_server.stop) + "\n")
    marker = tmp_path / "fired"
    stop = f"+callbacks.extra.crash={{_target_: killer.CommandOnce, step: 2, script: '{script}', marker: '{marker}'}}"
    storage = "hydra.sweeper.storage=${oc.env:DIGITS_TEST_STORAGE}"
    args = _search(grid_dir, tmp_path / "s", storage, "hydra.sweeper.n_trials=3", stop, lr="interval(0.01, 0.2)")
    proc = run_cli(args, cwd=tmp_path, check=False)
    one_line_error(proc, "the study 'digits' in postgresql://postgres:***@127.0.0.1:")
    assert "re-run the same command" in proc.stderr and "digits-pw" not in proc.stdout + proc.stderr
    first = next((tmp_path / "s").glob("0_*"))
    assert (tmp_path / "fired").exists() and metrics_of(first)["status"] == "completed"
    record = (first / "metrics.json").read_bytes()

    subprocess.run(postgres_server.start, check=True, capture_output=True)
    run_cli(args, cwd=tmp_path)
    study = _study(postgres_server.url)
    assert _states(study)["complete"] == 3  # and the sampler, seeded again, proposed trial 0's point: refused
    assert all("repeat_of" in t.user_attrs for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert (first / "metrics.json").read_bytes() == record  # reported, not trained again
    from digits.runs import tested_val_acc

    assert study.trials[0].value == tested_val_acc(metrics_of(first))  # the job's own objective
    assert sorted(d.name[0] for d in (tmp_path / "s").iterdir() if (d / "metrics.json").is_file()) == ["0", "1", "2"]


@pytest.mark.parametrize("db", ["an existing study", "a new study"])
def test_a_storage_on_a_read_only_mount_is_one_line_naming_the_cause(tmp_path: Path, grid_dir: Path, db: str) -> None:
    """A real read-only bind mount (root ignores chmod): the driver's reason, not Optuna's guess about "invalid
    data, e.g. exceeding max length", and nothing written in the sweep dir."""
    store = tmp_path / "store"
    store.mkdir()
    url = f"hydra.sweeper.storage=sqlite:///{store / 'study.db'}"
    if db == "an existing study":
        run_cli(_search(grid_dir, tmp_path / "first", url, "hydra.sweeper.n_trials=1"), cwd=tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(store), str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        before = sorted(p.name for p in ro.iterdir())
        more = [f"hydra.sweeper.storage=sqlite:///{ro / 'study.db'}", "hydra.sweeper.n_trials=2"]
        proc = run_cli(_search(grid_dir, tmp_path / "second", *more), cwd=tmp_path, check=False)
        one_line_error(proc, f"the study 'digits' in sqlite:///{ro / 'study.db'}")
        assert "readonly" in proc.stderr.replace("read-only", "readonly") or "unable to open" in proc.stderr
        assert "max length" not in proc.stderr
        assert sorted(p.name for p in ro.iterdir()) == before
        assert not any(p.is_file() for p in (tmp_path / "second").rglob("*") if p.name != "sweep.json")
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_the_dashboard_shows_a_finished_searchs_trials_in_a_real_browser(tmp_path: Path, grid_dir: Path) -> None:
    """`optuna-dashboard sqlite:///<sweep dir>/study.db`, as docs/sweeps.md says, read by headless Chromium."""
    chromium, dashboard = shutil.which("chromium"), shutil.which("optuna-dashboard")
    if not (chromium and dashboard):
        pytest.skip("needs Debian's chromium and optuna-dashboard (pip install -e '.[sweep]')")
    sweep = tmp_path / "search"
    run_cli(_search(grid_dir, sweep, "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=seen"), cwd=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [dashboard, f"sqlite:///{sweep / 'study.db'}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # it answers once it has read the study
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        page = subprocess.run(
            [
                chromium,
                *flags,
                f"--user-data-dir={tmp_path / 'browser'}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"http://127.0.0.1:{port}/dashboard/studies/1/trials",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = " ".join(re.sub(r"<[^>]*>", " ", page).split())
    assert "seen" in text and "Trial 0 Complete" in text and "Trial 1 Complete" in text, text[:2000]


@pytest.mark.slow
def test_two_slurm_jobs_work_on_one_study(slurm: Path, tmp_path: Path, grid_dir: Path) -> None:
    """Two workers submitted as SLURM jobs of the one-node cluster, on one study in a shared SQLite file."""
    import sys

    from helpers import cli_env

    db = tmp_path / "shared.db"
    shared = [f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=slurm", "hydra.sweeper.n_trials=4"]
    env = {**cli_env(tmp_path), "PYTHONWARNINGS": "ignore"}
    ids = []
    for i in range(2):
        command = " ".join(
            shlex.quote(a)
            for a in [sys.executable, "-m", "digits.train", *_search(grid_dir, tmp_path / f"w{i}", *shared)]
        )
        out = subprocess.run(
            ["sbatch", "--parsable", f"--output={tmp_path / f'w{i}.out'}", f"--chdir={tmp_path}", "--wrap", command],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        ids.append(out.stdout.strip().split(";")[0])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True, text=True).stdout.strip()
        if not queued:
            break
        time.sleep(2)
    logs = "".join((tmp_path / f"w{i}.out").read_text() for i in range(2))
    study = _study(f"sqlite:///{db}", "slurm")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and len({t.number for t in done}) == 4, logs[-3000:]
    runs = [d for w in ("w0", "w1") for d in (tmp_path / w).iterdir() if (d / "metrics.json").is_file()]
    assert len(runs) == 4


def test_workers_that_start_together_all_open_the_study(tmp_path: Path) -> None:
    """Four workers opening one new study at the same moment: the storage's tables and the study are created once,
    and every worker gets them (the one that loses the race looks again)."""
    import threading

    from digits.search import SearchSweeperBase

    url = f"sqlite:///{tmp_path / 'new.db'}"
    barrier, errors, studies = threading.Barrier(4), [], []

    def worker() -> None:
        sweeper = SearchSweeperBase(storage=url, study_name="race", params={"lr": "interval(0.01, 0.1)"})
        barrier.wait()
        try:
            studies.append(sweeper.open_study(["model=lenet"]))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(studies) == 4
    assert len(optuna.get_all_study_summaries(storage=url)) == 1


# --- the space is checked before the first trial; failed trials count ------------------------------------------------
# Keys with limits in the schema, and values that break them: lr > 0, a probability below 1, momentum in [0, 1].
_BAD_BOUNDS = {"lr": (-5.0, 0.0), "model.dropout": (1.0, 9.0), "optim.momentum": (1.01, 50.0)}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(sorted(_BAD_BOUNDS)),
    bad=st.floats(0, 1),
    good_first=st.booleans(),
    choice=st.booleans(),
)
def test_a_space_outside_the_schema_is_refused_before_any_trial(
    tmp_path_factory: pytest.TempPathFactory, key: str, bad: float, good_first: bool, choice: bool
) -> None:
    """Any range of any limited key with one value outside its limits, as a choice or as an interval's end, is one
    line naming the range, before anything is written (checked in process: cli_args.prepare is what train runs
    first)."""
    from digits import cli_args
    from digits.errors import UserError

    lo, hi = _BAD_BOUNDS[key]
    wrong = round(lo + bad * (hi - lo), 3)
    fine = {"lr": 0.05, "model.dropout": 0.2, "optim.momentum": 0.5}[key]
    ends = (fine, wrong) if good_first else (wrong, fine)
    space = f"choice({ends[0]}, {ends[1]})" if choice else f"interval({min(ends)}, {max(ends)})"
    cwd = tmp_path_factory.mktemp("space")
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with pytest.raises(UserError) as e:
            cli_args.prepare(["-m", "hydra/sweeper=search", "debug=fast", f"hydra.sweeper.params.{key}={space}"])
    finally:
        os.chdir(here)
    assert f"hydra.sweeper.params.{key}=" in str(e.value) and "would fail" in str(e.value)
    assert list(cwd.iterdir()) == []


def test_a_choice_that_names_no_config_is_refused_before_any_trial(tmp_path: Path, grid_dir: Path) -> None:
    proc = run_cli(
        ["-m", "hydra/sweeper=search", f"data.dir={grid_dir}", *FAST, "hydra.sweeper.params.optim=choice(sgd,adamx)"],
        cwd=tmp_path,
        check=False,
    )
    one_line_error(proc, "a trial at adamx would fail")
    assert not (tmp_path / "outputs").exists()


def test_a_search_whose_trials_all_fail_stops_in_one_line(tmp_path: Path, grid_dir: Path) -> None:
    """Trials that pass the schema but fail when they train (here a one-cycle schedule with no warm-up step) count
    towards n_trials, and a search whose first trials all fail stops, naming the failure."""
    sweep = tmp_path / "search"
    broken = [
        "scheduler=onecycle",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "hydra.sweeper.n_trials=20",
    ]
    proc = run_cli(_search(grid_dir, sweep, *broken, lr="interval(0.01, 0.2)"), cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("digits: error: the search stopped: its first 3 trials all failed"), last
    assert "scheduler cannot run" in last
    assert _states(_study(f"sqlite:///{sweep / 'study.db'}")) == {"fail": 3}


def test_a_search_is_identified_by_its_resolved_config_not_its_text(
    tmp_path: Path, grid_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same search spelled otherwise (data.dir relative, then through an environment variable) continues its
    study, and so does one with more trials; the same text on other data is another search, refused in one line
    that names the difference, before any trial."""
    other = tmp_path / "other"
    shutil.copytree(grid_dir, other)
    sweep = tmp_path / "search"
    rel = os.path.relpath(grid_dir, tmp_path)
    run_cli(_search(Path(rel), sweep, "hydra.sweeper.n_trials=1", lr="interval(0.01, 0.2)"), cwd=tmp_path)
    monkeypatch.setenv("DIGITS_TEST_D", str(grid_dir))
    more = _search(Path("${oc.env:DIGITS_TEST_D}"), sweep, "hydra.sweeper.n_trials=2", lr="interval(0.01, 0.2)")
    run_cli(more, cwd=tmp_path)
    study = _study(f"sqlite:///{sweep / 'study.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2
    monkeypatch.setenv("DIGITS_TEST_D", str(other))
    proc = run_cli(more, cwd=tmp_path, check=False)
    one_line_error(proc, "holds another search (data.location: was")
    assert str(other) in proc.stderr


def test_a_finite_space_whose_every_point_failed_ends_in_one_line(tmp_path: Path, grid_dir: Path) -> None:
    """Two points, both failing: the search has nothing new to try and nothing that worked, which is one line."""
    sweep = tmp_path / "search"
    broken = ["scheduler=onecycle", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "hydra.sweeper.n_trials=5"]
    proc = run_cli(_search(grid_dir, sweep, *broken), cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("digits: error: the search stopped: its first 2 trials")


def test_a_worker_waiting_on_a_trial_whose_owner_died_reaps_it(tmp_path: Path) -> None:
    """A RUNNING trial whose owner is a process of this host that is gone is marked failed while the others wait,
    not waited on for an hour."""
    import subprocess
    import sys

    from digits.search import _wait_for_others

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.01, 0.1)})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trial.set_user_attr("digits_owner", {"host": socket.gethostname(), "pid": int(dead.stdout)})
    start = time.monotonic()
    _wait_for_others(study, poll_s=0.05, limit_s=30)
    assert time.monotonic() - start < 10
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL


def test_a_sampler_the_search_cannot_build_says_why_in_one_line(tmp_path: Path, grid_dir: Path) -> None:
    proc = run_cli(_search(grid_dir, tmp_path / "s", "hydra.sweeper.sampler.seed=-5"), cwd=tmp_path, check=False)
    one_line_error(proc, "Seed must be between 0 and 2**32 - 1")
