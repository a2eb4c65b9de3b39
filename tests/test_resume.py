"""Nothing lost: killed runs resume to the same numbers, signals stop cleanly, sweeps pick up where they stopped."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import FAST, finish, job_dir, metrics_of, one_line_error, run_cli, start_cli

SAME = ["status", "epochs", "best_epoch", "val_acc_best", "test_acc", "test_loss", "train_loss_last", "val_loss_last"]
# 540 training rows at batch 32: 16 steps an epoch, so step 24 is the middle of the second epoch.
# Pauses 50 ms after each step so that a signal sent at the end of epoch 1 lands in the middle of the run.
SLOW = ["+callbacks.extra.slow._target_=killer.SleepEachStep"]
LONG = [*FAST, "model=lenet", "trainer.max_epochs=4", "data.batch_size=32", "data.augment=true", "model.dropout=0.3"]


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """Every (step, value) written for tag, across all event files, in the order written. Files are ordered by the
    time of their first event: the whole seconds in their names tie when a killed run is resumed within a second."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = [list(EventFileLoader(str(f)).Load()) for f in run_dir.glob("events.out.tfevents.*")]
    out = []
    for events in sorted(files, key=lambda events: events[0].wall_time):
        for event in events:
            for v in event.summary.value:
                if v.tag == tag:
                    value = v.simple_value if v.HasField("simple_value") else float(v.tensor.float_val[0])
                    out.append((event.step, value))
    return out


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > end:
            _, err = proc.communicate()
            raise AssertionError(f"{path} never appeared (exit {proc.returncode})\n{err[-2000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same run, left alone."""
    from helpers import make_folder

    cwd = tmp_path_factory.mktemp("resume")
    data = make_folder(cwd / "grid", header="grid", test="labelled")
    run_cli([f"data.dir={data}", f"hydra.run.dir={cwd / 'ref'}", *LONG], cwd=cwd)
    return cwd, data


def test_sigkill_mid_epoch_then_resume_gives_the_same_run(reference: tuple[Path, Path]) -> None:
    cwd, data = reference
    victim = cwd / "victim"
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=24"]
    proc = run_cli([f"data.dir={data}", f"hydra.run.dir={victim}", *LONG, *killer], cwd=cwd, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert (victim / "checkpoints" / "last.ckpt").is_file() and not (victim / "metrics.json").exists()

    out = run_cli([f"resume={victim}", "callbacks.extra.killer=null"], cwd=cwd)  # no need to repeat the other overrides
    assert "resuming from" in out.stderr + out.stdout
    ref, got = metrics_of(cwd / "ref"), metrics_of(victim)
    assert {k: got[k] for k in SAME} == {k: ref[k] for k in SAME}
    assert len(got["epoch_seconds"]) == 4  # the record of the killed process's epochs came back with the checkpoint
    a = torch.load(cwd / "ref" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(victim / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # One continuous TensorBoard curve: every epoch once, at the same steps as the run left alone.
    for tag in ("val/acc", "train/loss"):
        steps = [s for s, _ in _scalars(victim, tag)]
        assert len(steps) == len(set(steps)) == 4, (tag, steps)
        assert _scalars(victim, tag) == _scalars(cwd / "ref", tag)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_cleanly_and_resume(reference: tuple[Path, Path], sig: int, code: int) -> None:
    cwd, data = reference
    run = cwd / f"sig{sig}"
    proc = start_cli([f"data.dir={data}", f"hydra.run.dir={run}", *LONG, *SLOW], cwd)
    _wait_for(run / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(sig)
    _, err = finish(proc)
    assert proc.returncode == code, err[-2000:]
    m = metrics_of(run)
    assert m["status"] == "interrupted" and m["signal"] == signal.Signals(sig).name
    assert m["epochs"] >= 1 and m["val_acc_best"] is not None and m["model"] == "lenet"  # progress so far
    assert f"resume={run}" in err and (run / "checkpoints" / "last.ckpt").is_file()
    if sig == signal.SIGINT:
        return  # resuming after a signal is the same path for both; the SIGTERM case checks it
    run_cli([f"resume={run}"], cwd=cwd)
    ref, got = metrics_of(cwd / "ref"), metrics_of(run)
    assert {k: got[k] for k in SAME} == {k: ref[k] for k in SAME}


def test_resuming_a_finished_run_is_refused(reference: tuple[Path, Path]) -> None:
    cwd, _ = reference
    before = (cwd / "ref" / "metrics.json").read_bytes()
    proc = run_cli([f"resume={cwd / 'ref'}"], cwd=cwd, check=False)
    assert proc.returncode == 2 and "already finished" in proc.stderr
    assert (cwd / "ref" / "metrics.json").read_bytes() == before


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage", ["truncated", "foreign", "not a checkpoint"])
def test_a_broken_checkpoint_is_one_clear_line(reference: tuple[Path, Path], damage: str) -> None:
    cwd, _ = reference
    run = cwd / f"broken-{damage.replace(' ', '-')}"
    shutil.copytree(cwd / "ref", run)
    (run / "metrics.json").unlink()  # pretend it was killed
    ckpt = run / "checkpoints" / "last.ckpt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "foreign":
        ckpt.write_bytes(pickle.dumps({"state_dict": _Evil()}))
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    proc = run_cli([f"resume={run}"], cwd=cwd, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and str(ckpt) in lines[0], proc.stderr
    assert "checkpoint" in lines[0] and "Traceback" not in proc.stderr
    assert "weights_only" not in proc.stderr and "\x1b" not in proc.stderr  # never advise loading it unsafely


@pytest.mark.slow  # the longest of the suite (~15-25 s on 2 cores)
def test_an_interrupted_sweep_picks_up_where_it_stopped(tmp_path: Path, grid_dir: Path) -> None:
    args = ["-m", f"data.dir={grid_dir}", "lr=0.02,0.05,0.1", *FAST, "model=lenet", "trainer.max_epochs=4"]
    args += ["data.batch_size=32", *SLOW]
    proc = start_cli(args, tmp_path)
    end = time.time() + 120
    while not list((tmp_path / "outputs" / "multirun").glob("*/*/1_*/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.time() < end, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert proc.returncode == 143
    (sweep_dir,) = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert metrics_of(job_dir(sweep_dir, 0))["status"] == "completed"
    assert metrics_of(job_dir(sweep_dir, 1))["status"] == "interrupted"
    assert not list(sweep_dir.glob("2_*"))
    done_before = (job_dir(sweep_dir, 0) / "metrics.json").stat().st_mtime_ns

    run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 3 and set(summary["status"]) == {"completed"}
    assert (job_dir(sweep_dir, 0) / "metrics.json").stat().st_mtime_ns == done_before  # skipped, not retrained
    assert "resuming from" in (job_dir(sweep_dir, 1) / "train.log").read_text()
    assert json.loads((job_dir(sweep_dir, 1) / "metrics.json").read_text())["epochs"] == 4


def test_a_signal_ignored_from_the_start_stays_ignored_while_training() -> None:
    from digits.callbacks import SignalsAsInterrupts

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # how a shell starts a background job
    try:
        with SignalsAsInterrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)  # SIGTERM still stops
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("change", ["lr=0.5", "model=ann", "data.batch_size=16"])
def test_a_run_without_fingerprint_json_is_checked_against_its_last_checkpoint(
    reference: tuple[Path, Path], tmp_path: Path, change: str
) -> None:
    """A run from before fingerprint.json (here: the file removed) still carries the config it trained with in
    last.ckpt: a resume that changes the weights' trajectory is refused naming the key, and nothing is written."""
    cwd, data = reference
    victim = tmp_path / "old"
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=24"]
    proc = run_cli([f"data.dir={data}", f"hydra.run.dir={victim}", *LONG, *killer], cwd=cwd, check=False)
    assert proc.returncode == -signal.SIGKILL
    (victim / "fingerprint.json").unlink()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in victim.rglob("*"))
    proc = run_cli([f"resume={victim}", "callbacks.extra.killer=null", change], cwd=cwd, check=False)
    one_line_error(proc, f"{change.split('=')[0].split('.')[0]}")
    assert "from its last.ckpt" in proc.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in victim.rglob("*")) == before
    if change == "lr=0.5":  # the same run, resumed as it was, goes on
        run_cli([f"resume={victim}", "callbacks.extra.killer=null"], cwd=cwd)
        assert metrics_of(victim)["status"] == "completed"


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_testing_leaves_an_interrupted_resumable_run(
    reference: tuple[Path, Path], tmp_path: Path, sig: str, code: int
) -> None:
    """After training, while the run scores its test split: the same ending as a signal in fit (an interrupted
    record, the resume command), and the resume finishes the run with the numbers of the run left alone."""
    cwd, data = reference
    run = tmp_path / "late"
    hook = ["+callbacks.extra.late._target_=killer.SignalWhileTesting", f"+callbacks.extra.late.sig={sig}"]
    proc = run_cli([f"data.dir={data}", f"hydra.run.dir={run}", *LONG, *hook], cwd=cwd, check=False)
    assert proc.returncode == code, proc.stderr[-2000:]
    m = metrics_of(run)
    assert m["status"] == "interrupted" and m["signal"] == sig and m["epochs"] == 4
    assert f"resume={run}" in proc.stderr
    run_cli([f"resume={run}", "callbacks.extra.late=null"], cwd=cwd)
    ref, got = metrics_of(cwd / "ref"), metrics_of(run)
    assert {k: got[k] for k in SAME} == {k: ref[k] for k in SAME}


def test_a_moved_run_dir_resumed_keeps_replacing_its_own_best_checkpoint(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    """Lightning's checkpoint state names the folder it wrote to; read in another folder it would forget the best
    score (any next epoch becomes 'best') and write best-v1.ckpt beside the copied best.ckpt. A moved run resumes
    as if it had never moved: the same two files, the same best weights as the run left alone."""
    cwd, data = reference
    first = tmp_path / "first"
    killer = ["+callbacks.extra.killer._target_=killer.SignalAtStep", "+callbacks.extra.killer.step=24"]
    proc = run_cli([f"data.dir={data}", f"hydra.run.dir={first}", *LONG, *killer], cwd=cwd, check=False)
    assert proc.returncode == -signal.SIGKILL
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    run_cli([f"resume={moved}", "callbacks.extra.killer=null"], cwd=cwd)
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    ref, got = metrics_of(cwd / "ref"), metrics_of(moved)
    assert {k: got[k] for k in SAME} == {k: ref[k] for k in SAME}
    assert got["best_checkpoint"] == "checkpoints/best.ckpt"
    for name in ("best.ckpt", "last.ckpt"):
        a = torch.load(cwd / "ref" / "checkpoints" / name, weights_only=True)
        b = torch.load(moved / "checkpoints" / name, weights_only=True)
        assert a["epoch"] == b["epoch"], name
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), name
