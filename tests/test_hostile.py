"""What a hostile user tries: each case ends in one line (exit 2, nothing left behind) or in a correct success."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, finish, make_folder, metrics_of, one_line_error, run_cli, start_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _nothing_under(path: Path) -> bool:
    return not path.exists() or not any(p.is_file() for p in path.rglob("*"))


@pytest.mark.parametrize(
    "override, expect",
    [
        ("lr=-1", "lr=-1.0: must be > 0"),
        ("lr=nan", "lr=nan: must be a finite number"),
        ("optim.momentum=-1", "optim.momentum=-1.0: must be >= 0"),
        ("seed=-1", "seed=-1: must be >= 0"),
        ("seed=4294967296", "seed=4294967296: must be >= 0 and <= 4294967295"),
        ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer, got 'abc'"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: must be >= 1"),
        ("data.batch_size=abc", "data.batch_size must be an integer, got 'abc'"),
        ("model.dropout=1.5", "model.dropout=1.5: must be >= 0 and < 1"),
        ("model.channels=[32,64]", "model.channels=[32, 64]: must have 3 items (the three stages' widths)"),
        ("model.channels=[32,0,128]", "model.channels=[32, 0, 128]: each item must be >= 1"),
        ("data.elastic_sigma=0", "data.elastic_sigma=0.0: must be > 0 and <= 14"),
        ("data.split_seed=-1", "data.split_seed=-1: must be >= 0 and <= 4294967295 (the split's seed)"),
        ("trainer.max_epoch=1", "unknown key trainer.max_epoch (did you mean trainer.max_epochs?); valid keys of"),
        ("init=orthogonal", "unknown init 'orthogonal'; valid: default, normal, xavier, kaiming, zeros"),
    ],
)
def test_a_bad_value_is_one_line_before_anything_exists(tmp_path: Path, override: str, expect: str) -> None:
    one_line_error(run_cli([override], cwd=tmp_path, check=False), expect)
    assert not (tmp_path / "outputs").exists()


def test_a_bad_value_in_any_job_of_a_sweep_stops_the_sweep_before_it_starts(tmp_path: Path) -> None:
    one_line_error(run_cli(["-m", "lr=0.1,-1"], cwd=tmp_path, check=False), "lr=-1.0: must be > 0")
    assert not (tmp_path / "outputs").exists()


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("label\n")
    proc = run_cli([f"data.dir={tmp_path / 'train.csv'}", *FAST], cwd=tmp_path, check=False)
    one_line_error(proc, "is a file; data.dir takes the folder")
    assert not (tmp_path / "outputs").exists()


def test_two_runs_started_together_never_share_a_run_dir(tmp_path: Path, grid_dir: Path) -> None:
    target = tmp_path / "outputs" / "same"
    args = [f"data.dir={grid_dir}", *FAST, "model=lenet", "trainer.max_epochs=1"]
    procs = [start_cli([*args, f"hydra.run.dir={target}"], tmp_path) for _ in range(2)]
    # finish() reads the pipes while it waits: wait() alone could block for good on a full pipe.
    errs = [finish(p, timeout=300)[1] for p in procs]
    results = [(p.returncode, err) for p, err in zip(procs, errs)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    (err,) = [e for code, e in results if code == 2]
    assert "in use by another run" in err or "already holds a run" in err
    assert metrics_of(target)["status"] == "completed"

    # The default dir (outputs/<date>/<time>) is unique per process, even when both start in the same second.
    procs = [start_cli(args, tmp_path) for _ in range(2)]
    for p in procs:
        finish(p, timeout=300)
    assert [p.returncode for p in procs] == [0, 0]
    dirs = {p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")}
    assert len(dirs) == 2


def test_a_marker_being_written_is_never_taken_for_a_dead_runs(tmp_path: Path) -> None:
    """The two windows of the race above, made deterministic: a marker read before its text is there, and a run
    that finishes between the results check and the claim."""
    from digits.cli_args import prepare
    from digits.errors import UserError
    from digits.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.claim()
    assert json.loads(run.claim_file.read_text())["pid"] == os.getpid()  # whole at once, no temp file left
    assert sorted(p.name for p in run.path.iterdir()) == [".digits-claim", ".digits-dir"]
    run.claim_file.write_text("")  # what a reader saw while O_EXCL's file was still empty
    with pytest.raises(UserError, match="cannot be read; if no run uses this dir, delete the marker"):
        RunDir(run.path).claim()
    assert run.claim_file.read_text() == ""  # not taken over

    target = tmp_path / "finished"
    real_claim = RunDir.claim

    def claim_after_the_other_run_finished(self: RunDir, kind: str = "run") -> None:
        real_claim(self, kind)
        self.metrics.write_text("{}")  # the other run wrote its results and gave the dir up

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDir, "claim", claim_after_the_other_run_finished)
        with pytest.raises(UserError, match="already holds a run"):
            prepare([f"hydra.run.dir={target}"])
    # its claim is gone, the results stay (with the run-dir marker the other run wrote)
    assert sorted(p.name for p in target.iterdir()) == [".digits-dir", "metrics.json"]


def test_a_marker_is_exclusive_without_hard_links_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from digits import runs

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # what some FUSE and network filesystems answer

    monkeypatch.setattr(runs.os, "link", no_links)
    marker = tmp_path / ".digits-claim"
    assert runs._create_exclusive(marker, '{"pid": 1}') and marker.read_text() == '{"pid": 1}'
    assert not runs._create_exclusive(marker, '{"pid": 2}') and marker.read_text() == '{"pid": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [".digits-claim"]


def test_a_failed_run_removes_only_what_it_made(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    proc = run_cli([f"hydra.run.dir={mine}", f"data.dir={tmp_path / 'nope'}", *FAST], cwd=tmp_path, check=False)
    one_line_error(proc, "holds files that digits did not write (config.yaml)")
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
    assert (mine / "config.yaml").read_text() == "my own notes\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli([f"hydra.run.dir={empty}", f"data.dir={tmp_path / 'nope'}", *FAST], cwd=tmp_path, check=False)
    one_line_error(proc, "data folder does not exist")
    assert empty.is_dir() and not any(empty.iterdir())  # the user's dir stays, and empty

    fresh = tmp_path / "deep" / "new" / "run"
    proc = run_cli([f"hydra.run.dir={fresh}", f"data.dir={tmp_path / 'nope'}", *FAST], cwd=tmp_path, check=False)
    one_line_error(proc, "data folder does not exist")
    assert not (tmp_path / "deep").exists()  # every level it made is gone, and nothing else


def test_a_different_sweep_is_refused_in_an_existing_sweep_dir(tmp_path: Path, grid_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    base = ["-m", f"data.dir={grid_dir}", *FAST, "model=lenet", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    run_cli([*base, "lr=0.05,0.1"], cwd=tmp_path)
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.suffix in (".yaml", ".json")}
    one_line_error(run_cli([*base, "lr=0.5,1.0"], cwd=tmp_path, check=False), "holds a different sweep")
    # Not extensions: the old jobs reordered (job 0 would become lr=0.1), a fixed value changed, a new swept key.
    for changed in (["lr=0.1,0.05,0.2"], ["lr=0.05,0.1,0.2", "model=ann"], ["lr=0.05,0.1", "seed=0,1"]):
        proc = run_cli([*base, *changed], cwd=tmp_path, check=False)
        one_line_error(proc, "extend it by appending values")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(d.name for d in sweep.iterdir() if d.is_dir()) == ["0_lr=0.05", "1_lr=0.1"]


def test_a_finished_sweep_extended_runs_only_its_new_jobs(tmp_path: Path, grid_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    base = ["-m", f"data.dir={grid_dir}", *FAST, "model=lenet", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    run_cli([*base, "lr=0.05,0.1"], cwd=tmp_path)
    before = {p: p.read_bytes() for p in sweep.glob("*/metrics.json")}
    proc = run_cli([*base, "lr=0.05,0.1,0.2"], cwd=tmp_path)
    assert proc.stdout.count("skipping") + proc.stderr.count("skipping") == 2, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in before} == before  # the finished jobs are untouched
    assert sorted(d.name for d in sweep.iterdir() if d.is_dir()) == ["0_lr=0.05", "1_lr=0.1", "2_lr=0.2"]
    assert metrics_of(sweep / "2_lr=0.2")["status"] == "completed"
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 4 and all(f"lr={v}" in "".join(summary) for v in ("0.05", "0.1", "0.2"))
    # The extended sweep is now the one the dir holds: its own re-run skips all three, the old command is refused.
    proc = run_cli([*base, "lr=0.05,0.1,0.2"], cwd=tmp_path)
    assert proc.stdout.count("skipping") + proc.stderr.count("skipping") == 3, proc.stderr[-2000:]
    one_line_error(run_cli([*base, "lr=0.05,0.1"], cwd=tmp_path, check=False), "holds a different sweep")


def test_last_ckpt_is_the_last_epoch_even_after_a_plateau(tmp_path: Path, grid_dir: Path) -> None:
    """A tiny learning rate leaves validation accuracy flat: the best checkpoint stays at epoch 1, last moves on."""
    run = tmp_path / "run"
    args = [f"data.dir={grid_dir}", *FAST, "model=lenet", "trainer.max_epochs=3", "lr=1e-12", f"hydra.run.dir={run}"]
    run_cli(args, cwd=tmp_path)
    m = metrics_of(run)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert m["epochs"] == 3 and m["best_epoch"] == 1
    assert last["epoch"] == 2 and best["epoch"] == 0  # 0-based in Lightning's checkpoints


def test_resume_refuses_a_new_model_and_takes_a_path_with_a_space(tmp_path: Path, grid_dir: Path) -> None:
    run = tmp_path / "my runs" / "a, b=c"
    kill = "+callbacks.extra.killer={_target_: killer.SignalAtStep, step: 10, sig: SIGTERM}"
    args = [f"data.dir={grid_dir}", "model=ann", *FAST, "trainer.max_epochs=3", "data.batch_size=32"]
    proc = run_cli([*args, kill, f"hydra.run.dir='{run}'"], cwd=tmp_path, check=False)
    assert proc.returncode == 143, proc.stderr[-2000:]
    saved = (run / ".hydra" / "overrides.yaml").read_bytes()
    one_line_error(
        run_cli([f"resume={run}", "model=lenet"], cwd=tmp_path, check=False),
        "but model._target_: was digits.models.ann.ANN, now digits.models.lenet.LeNet5",
    )
    assert (run / ".hydra" / "overrides.yaml").read_bytes() == saved
    run_cli([f"resume={run}", "callbacks.extra.killer=null"], cwd=tmp_path)
    m = metrics_of(run)
    assert m["status"] == "completed" and m["epochs"] == 3 and m["model"] == "ann"


def test_an_epoch_without_validation_records_none(tmp_path: Path, grid_dir: Path) -> None:
    run = tmp_path / "run"
    args = [f"data.dir={grid_dir}", *FAST, "model=lenet", "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2"]
    run_cli([*args, f"hydra.run.dir={run}", "callbacks.early_stopping=null"], cwd=tmp_path)
    accs = metrics_of(run)["val_acc"]
    assert [a is None for a in accs] == [True, False, True, False]


@pytest.mark.parametrize("cycle", [False, True])
def test_one_cycle_runs_the_momentum_the_config_says(tmp_path: Path, grid_dir: Path, cycle: bool) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = [f"data.dir={grid_dir}", *FAST, "model=lenet", "scheduler=onecycle", "optim.momentum=0.5"]
    args += [f"hydra.run.dir={run}"]
    run_cli([*args, f"scheduler.cycle_momentum={str(cycle).lower()}"], cwd=tmp_path)
    group = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"][0]
    assert group["lr"] >= 0  # the schedule ends where training does, not one step past it
    acc = EventAccumulator(str(run))
    acc.Reload()
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"].decode("latin1")
    if cycle:
        assert group["momentum"] != 0.5 and "cycled 0.85-0.95" in start
    else:
        assert group["momentum"] == 0.5


def _predictions_run(tmp_path: Path, content: bytes) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "val_acc_best": 0.9}))
    (run / "predictions.npz").write_bytes(content)
    return run


def _foreign_npz() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, weights=np.zeros(3))
    return buf.getvalue()


@pytest.mark.parametrize("content", [b"garbage, not a zip", _foreign_npz()], ids=["corrupt", "foreign"])
@pytest.mark.parametrize("module", ["digits.ensemble", "digits.report"])
def test_a_damaged_or_foreign_predictions_file_is_one_line(tmp_path: Path, content: bytes, module: str) -> None:
    run = _predictions_run(tmp_path, content)
    extra = ["--out", str(tmp_path / "ens")] if module == "digits.ensemble" else []
    proc = run_cli([str(run), *extra], cwd=tmp_path, module=module, check=False)
    one_line_error(proc, str(run))


def test_ensemble_out_must_be_a_new_writable_dir(tmp_path: Path) -> None:
    run = _predictions_run(tmp_path, _foreign_npz())
    (tmp_path / "taken").write_text("a file of mine\n")
    proc = run_cli([str(run), "--out", str(tmp_path / "taken")], cwd=tmp_path, module="digits.ensemble", check=False)
    one_line_error(proc, "is a file; an ensemble takes a directory")
    proc = run_cli([str(run), "--out", "/proc/digits-ens"], cwd=tmp_path, module="digits.ensemble", check=False)
    one_line_error(proc, "not writable")
    for bad in ("0", "-2"):
        proc = run_cli([str(run), "--top", bad], cwd=tmp_path, module="digits.ensemble", check=False)
        one_line_error(proc, "must be at least 1")


def test_report_says_when_it_cannot_write_its_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from matplotlib.figure import Figure

    from digits import report

    folder = make_folder(tmp_path / "grid", n_train=100, header="grid", test="labelled")
    run = tmp_path / "run"
    run_cli([f"data.dir={folder}", *FAST, "trainer.max_epochs=1", f"hydra.run.dir={run}"], cwd=tmp_path)

    def refuse(self: Figure, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Figure, "savefig", refuse)
    with pytest.raises(SystemExit) as info:
        report.main([str(run)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the figure (Permission denied)" in err[0]
    assert not list(run.glob(".*.tmp.png"))


@pytest.mark.parametrize(
    "module",
    [
        "digits.train",
        "digits.summary",
        "digits.report",
        "digits.ensemble",
        "digits.predict",
        "digits.export",
        "digits.demo",
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_entry_point_answers_help(tmp_path: Path, module: str, flag: str) -> None:
    proc = run_cli([flag], cwd=tmp_path, module=module)
    assert "usage" in proc.stdout.lower() and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_ctrl_c_before_training_leaves_nothing(tmp_path: Path, grid_dir: Path) -> None:
    import signal
    import time

    proc = start_cli([f"data.dir={grid_dir}", *FAST], tmp_path)
    end = time.time() + 60
    while not list((tmp_path / "outputs").glob("*/*/.digits-claim")):  # the run dir is claimed: Hydra starts
        assert proc.poll() is None and time.time() < end, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert _nothing_under(tmp_path / "outputs")


def test_summary_checks_its_overrides_too(tmp_path: Path) -> None:
    proc = run_cli(["model=ann", "model.dropout=2"], cwd=tmp_path, module="digits.summary", check=False)
    one_line_error(proc, "model.dropout=2.0: must be >= 0 and < 1")


def test_val_fraction_zero_trains_on_every_row_with_the_last_weights(tmp_path: Path, kaggle_dir: Path) -> None:
    run = tmp_path / "all"
    proc = run_cli([f"data.dir={kaggle_dir}", *FAST, "data.val_fraction=0", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert "data.val_fraction=0: training on every labelled row for 2 epochs" in proc.stderr + proc.stdout
    assert "completed after 2 epochs: no validation, test -" in proc.stderr + proc.stdout
    m = metrics_of(run)
    assert m["status"] == "completed" and m["epochs"] == 2 and m["tested_weights"] == "last"
    assert m["val_acc_best"] is None and m["data"]["n_train"] == 600 and m["data"]["n_val"] == 0
    assert (run / "submission.csv").is_file() and not (run / "checkpoints" / "best.ckpt").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


# --- the file system's refusals, in the run-dir owner ----------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    mode=st.sampled_from(["run", "sweep"]),
    case=st.sampled_from(["long name", "marker is a dir", "claim is a dir", "parent is a file"]),
    length=st.integers(256, 400),
    depth=st.integers(0, 2),
)
def test_a_file_system_refusal_is_one_line_and_leaves_nothing(
    tmp_path_factory: pytest.TempPathFactory, mode: str, case: str, length: int, depth: int
) -> None:
    """Whatever the file system refuses while a dir is checked and claimed (a name over 255 bytes, a marker name
    taken by a directory, a parent that is a file), the command stops with one UserError naming a path, and the
    tree is as it was."""
    from digits import cli_args
    from digits.errors import UserError

    cwd = tmp_path_factory.mktemp("fs")
    target = Path("outputs", *(["deeper"] * depth), "r")
    if case == "long name":
        target = target.parent / ("x" * length)
    elif case == "parent is a file":
        (cwd / "outputs").mkdir()
        (cwd / "outputs" / "f").write_text("mine")
        target = Path("outputs", "f", "r")
    else:
        marker = ".digits-dir" if case == "marker is a dir" else ".digits-claim"
        (cwd / target / marker).mkdir(parents=True)
    before = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
    key = "hydra.sweep.dir" if mode == "sweep" else "hydra.run.dir"
    args = [*(["-m", "lr=0.1,0.2"] if mode == "sweep" else []), "debug=fast", f"{key}={cwd / target}"]
    with pytest.raises(UserError) as e:
        cli_args.prepare(args)
    assert e.value.file and "\n" not in str(e.value)
    assert sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*")) == before
