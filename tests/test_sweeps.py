"""Sweeps that survive a diverging and a failing job; the summary, figures, TensorBoard, notebook; launchers, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import nbformat
import pandas as pd
import pytest
import yaml
from helpers import FAST, ROOT, make_folder, metrics_of, one_line_error, only_run_dir, run_cli
from hydra import compose, initialize_config_dir
from hypothesis import given as generated
from hypothesis import settings
from hypothesis import strategies as st

from digits.cli_args import CONF_DIR

NOTEBOOK = ROOT / "notebooks" / "compare_runs.ipynb"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """lr=1e9 diverges; a data folder that is not there fails its jobs: 1 completed, 1 diverged, 2 failed jobs."""
    cwd = tmp_path_factory.mktemp("sweep")
    data = make_folder(cwd / "grid", header="grid", test="labelled")
    args = ["-m", f"data.dir={data},{cwd / 'gone'}", "lr=0.05,1e9", *FAST, "trainer.max_epochs=3"]
    proc = run_cli(args, cwd=cwd)
    (sweep_dir,) = list((cwd / "outputs" / "multirun").glob("*/*"))
    return sweep_dir, proc.stdout


def test_a_diverging_and_a_failing_job_do_not_stop_the_sweep(sweep: tuple[Path, str]) -> None:
    sweep_dir, stdout = sweep
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("overrides")
    good = f"data.dir={sweep_dir.parents[3] / 'grid'}"
    assert summary.loc[f"{good},lr=0.05", "status"] == "completed"
    assert summary.loc[f"{good},lr=1000000000.0", "status"] == "diverged"
    assert summary.loc[f"{good},lr=1000000000.0", "epochs"] == 1  # stopped at once, not after patience
    failed = summary[summary["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("data folder does not exist").all()
    # Best first, by validation accuracy.
    assert summary.index[0] == f"{good},lr=0.05"
    expected = ["job", "status", "epochs", "best_epoch", "val_acc_best", "val_acc_tested", "test_acc", "test_ci_low"]
    assert list(summary.columns[:8]) == expected
    # The test accuracy's interval: Wilson's 95% for the job's test images, around its accuracy.
    from digits.stats import interval

    row = summary.loc[f"{good},lr=0.05"]
    n_test = metrics_of(sweep_dir / row["job"])["data"]["n_test"]
    lo, hi = interval(round(row["test_acc"] * n_test), n_test)
    assert (row["test_ci_low"], row["test_ci_high"]) == pytest.approx((lo, hi)) and lo <= row["test_acc"] <= hi
    md = (sweep_dir / "summary.md").read_text()
    assert md.startswith("| job | overrides | status |") and "diverged" in md
    assert "Sweep summary (2/4 jobs with a result)" in stdout and "| failed |" in stdout


def test_failed_job_records_its_error(sweep: tuple[Path, str]) -> None:
    sweep_dir, _ = sweep
    failed = [metrics_of(d) for d in sweep_dir.iterdir() if (d / "metrics.json").is_file()]
    failed = [m for m in failed if m["status"] == "failed"]
    assert failed and all(m["error"].startswith("UserError: ") and "gone" in m["error"] for m in failed)


def test_exit_status_is_nonzero_only_when_no_job_has_a_result(tmp_path: Path, grid_dir: Path) -> None:
    proc = run_cli(["-m", f"data.dir={tmp_path / 'a'},{tmp_path / 'b'}", *FAST], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "no job of the sweep produced a result" in proc.stderr


def test_report_draws_the_sweep_and_a_run(sweep: tuple[Path, str]) -> None:
    sweep_dir, _ = sweep
    out = run_cli([str(sweep_dir)], cwd=sweep_dir, module="digits.report").stdout
    curves = sweep_dir / "curves.png"
    assert str(curves) in out and mpimg.imread(curves).shape[1] > 800
    best = pd.read_csv(sweep_dir / "summary.csv").iloc[0]["job"]
    run_dir = sweep_dir / str(best)
    out = run_cli([str(run_dir)], cwd=sweep_dir, module="digits.report").stdout
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (run_dir / name).is_file() and name in out
    bad = run_cli([str(sweep_dir / "nope")], cwd=sweep_dir, module="digits.report", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("digits: error:")


def test_tensorboard_holds_scalars_hparams_and_images(sweep: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep_dir, _ = sweep
    best = pd.read_csv(sweep_dir / "summary.csv").iloc[0]["job"]
    acc = EventAccumulator(str(sweep_dir / str(best)), size_guidance={"images": 0})
    assert "epoch" not in acc.Reload().Tags()["scalars"]  # every scalar is at step = epoch; no epoch-vs-step card
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2, 3]
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc"} <= set(tags["scalars"])
    assert {"test/confusion_matrix", "test/misclassified"} <= set(tags["images"])
    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams and "_hparams_/experiment" in hparams
    start = hparams["_hparams_/session_start_info"].decode("latin1")
    assert "optim" in start and "lr" in start
    assert "hparams/val_acc_best" in hparams["_hparams_/experiment"].decode("latin1")


def test_notebook_runs_by_the_readme_command_and_is_stored_without_outputs(sweep: tuple[Path, str]) -> None:
    stored = nbformat.read(NOTEBOOK, as_version=4)
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    sweep_dir, _ = sweep
    cwd = sweep_dir.parents[3]  # where the sweep was run: outputs/multirun/<date>/<time> lies below
    jupyter = Path(sys.executable).parent / "jupyter"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PWD": str(cwd)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # A newer sweep dir with no finished job in it must not be taken for "the newest sweep".
    (cwd / "outputs" / "multirun" / "9999-12-31" / "23-59-59" / "0_lr=1").mkdir(parents=True)
    (cwd / "outputs" / "multirun" / "9999-12-31" / "23-59-59" / "0_lr=1" / ".hydra").mkdir()
    for given in (str(sweep_dir.relative_to(cwd)), None):  # a relative DIGITS_SWEEP_DIR, then the default
        run_env = (
            {**env, "DIGITS_SWEEP_DIR": given} if given else {k: v for k, v in env.items() if k != "DIGITS_SWEEP_DIR"}
        )
        out = cwd / f"nb-{bool(given)}"
        cmd = [str(jupyter), "nbconvert", "--to", "html", "--execute", str(NOTEBOOK), "--output-dir", str(out)]
        subprocess.run(cmd, cwd=cwd, env=run_env, check=True, capture_output=True, timeout=300)
        html = (out / "compare_runs.html").read_text()
        assert str(sweep_dir) in html and ",lr=0.05" in html and "image/png" in html
        assert "val_acc_best (%)" in html and "test_acc (%)" in html  # percentages, as every other view


@pytest.mark.parametrize(
    "override, target",
    [
        ("hydra/launcher=parallel", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("hydra/sweeper=search", "hydra_plugins.digits_search.search_sweeper.SearchSweeper"),
    ],
)
def test_launcher_and_sweeper_configs_compose(override: str, target: str) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[override], return_hydra_config=True)
    group = override.split("=")[0].split("/")[1]
    assert cfg.hydra[group]._target_ == target


def test_ddp_config_composes() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=ddp"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2


def test_parallel_launcher_runs_jobs_side_by_side(tmp_path: Path, grid_dir: Path) -> None:
    args = ["-m", "hydra/launcher=parallel", f"data.dir={grid_dir}", "lr=0.01,0.1", *FAST, "trainer.max_epochs=1"]
    proc = run_cli(args, cwd=tmp_path)
    (sweep_dir,) = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert sorted(summary["overrides"]) == ["lr=0.01", "lr=0.1"] and set(summary["status"]) == {"completed"}
    assert "Joblib.Parallel" in proc.stdout + proc.stderr


def test_adaptive_search_chooses_trials_and_maximizes_val_acc(tmp_path: Path, grid_dir: Path) -> None:
    args = ["-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=3", f"data.dir={grid_dir}", *FAST]
    proc = run_cli([*args, "final_weights=last"], cwd=tmp_path)
    (sweep_dir,) = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(pd.read_csv(sweep_dir / "summary.csv")) == 3
    assert "Best value" in proc.stdout + proc.stderr
    # The value maximized is each job's validation accuracy with the weights it tested: its last epoch's here.
    tested = [m["val_acc"][-1] for m in map(json.loads, map(Path.read_text, sweep_dir.glob("*/metrics.json")))]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["best_value"]
    assert best == pytest.approx(max(tested))


def test_ddp_on_two_cpu_processes_leaves_one_run(tmp_path: Path, grid_dir: Path) -> None:
    run_cli(["trainer=ddp", "trainer.accelerator=cpu", f"data.dir={grid_dir}", *FAST], cwd=tmp_path)
    run = only_run_dir(tmp_path)
    assert len(list((tmp_path / "outputs").rglob("metrics.json"))) == 1
    m = metrics_of(run)
    assert m["status"] == "completed" and m["test_acc"] is not None and m["epochs"] == 2
    assert (run / "train_ddp_process_1.log").exists()  # a second process really ran


@pytest.mark.slow
def test_slurm_sweep_on_a_cpu_partition_and_a_refused_gpu_request(slurm: Path, tmp_path: Path, grid_dir: Path) -> None:
    args = ["-m", "hydra/launcher=slurm", f"data.dir={grid_dir}", *FAST, "trainer.max_epochs=1", "seed=0,1"]
    proc = run_cli([*args, f"hydra.sweep.dir={tmp_path / 'cpu'}"], cwd=tmp_path, timeout=600)
    assert "Sweep summary (2/2 jobs with a result)" in proc.stdout, proc.stdout + proc.stderr
    assert "srun" not in proc.stderr  # Lightning's SLURM hint is noise outside a SLURM job
    script = next((tmp_path / "cpu" / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "--gpus-per-node" not in script and "--gres" not in script  # a CPU trainer asks for no GPU

    proc = run_cli([*args, "trainer=gpu", f"hydra.sweep.dir={tmp_path / 'gpu'}"], cwd=tmp_path, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("digits: error: the cluster refused the jobs: sbatch: error:")
    assert not (tmp_path / "gpu").exists()  # no empty sweep dir left behind


def test_a_real_tensorboard_server_names_runs_by_what_they_varied(sweep: tuple[Path, str]) -> None:
    """`tensorboard --logdir SWEEP`: the runs are the job dirs, the x-axis is the epoch, and no epoch-vs-step card."""
    import socket
    import time
    import urllib.request

    sweep_dir, _ = sweep
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(sweep_dir), "--port", str(port)]
    server = subprocess.Popen([*cmd, "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end, tags = time.time() + 90, {}
        while not tags:
            assert server.poll() is None and time.time() < end
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        good = f"data.dir={sweep_dir.parents[3] / 'grid'}".replace("/", "%")
        assert f"0_{good},lr=0.05" in tags and all("epoch" not in t for t in tags[f"0_{good},lr=0.05"])
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=0_{good},lr=0.05&tag=val/acc"
        with urllib.request.urlopen(url.replace("%", "%25"), timeout=5) as r:
            assert [step for _, step, _ in json.loads(r.read())] == [1, 2, 3]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_curves_of_runs_without_validation_have_no_empty_panel() -> None:
    from digits.plots import curves_figure

    trained = pd.DataFrame({"epoch": [1, 2, 3], "train/loss": [0.5, 0.2, 0.1]})
    validated = trained.assign(**{"val/acc": [0.9, 0.95, 0.97]})
    assert len(curves_figure({"0_seed=0": trained}, title="a=1," * 40).axes) == 1  # data.val_fraction=0
    assert len(curves_figure({"0_seed=0": trained, "1_seed=1": validated}).axes) == 2
    no_val_yet = validated.assign(**{"val/acc": [float("nan")] * 3})
    assert len(curves_figure({"0_seed=0": no_val_yet}).axes) == 1
    # Every run above 98%: a third panel, the validation error on a log scale, where they can be told apart.
    high = {f"{i}_seed={i}": trained.assign(**{"val/acc": [0.97, 0.985 + i / 1000, 0.99 + i / 1000]}) for i in range(3)}
    fig = curves_figure(high)
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "validation accuracy", "validation error"]
    assert fig.axes[2].get_yscale() == "log"
    assert len(curves_figure({**high, "3_seed=3": validated}).axes) == 2  # one run below 98%: accuracy says enough


def test_summary_ranks_jobs_by_the_validation_accuracy_of_the_weights_they_tested(tmp_path: Path) -> None:
    """A job tested with its last weights ranks by its last epoch, not by a better epoch it did not keep, as
    `ensemble --top` ranks it; `report --top` plots the summary's first jobs."""
    from digits.sweep import summarize

    records = {
        "0_seed=0": {"tested_weights": "last", "val_acc": [0.99, 0.90], "val_acc_best": 0.99},
        "1_seed=1": {"tested_weights": "last", "val_acc": [0.93, 0.95], "val_acc_best": 0.95},
        "2_seed=2": {"tested_weights": "average", "val_acc": [0.96], "val_acc_average": 0.97, "val_acc_best": 0.96},
        "3_seed=3": {"tested_weights": "best", "val_acc": [0.94, 0.92], "val_acc_best": 0.94},
    }
    for name, record in records.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"status": "completed", **record}))
    frame = summarize(tmp_path)
    assert frame["job"].tolist() == ["2_seed=2", "1_seed=1", "3_seed=3", "0_seed=0"]
    assert frame["val_acc_tested"].tolist() == [0.97, 0.95, 0.94, 0.90]
    assert frame["val_acc_best"].tolist() == [0.96, 0.95, 0.94, 0.99]


@settings(max_examples=25, deadline=None)
@generated(
    accs=st.lists(st.floats(0.9, 1.0), min_size=2, max_size=5),
    other=st.lists(st.floats(0.9, 1.0), min_size=1, max_size=3),
)
def test_jobs_that_differ_only_by_seed_are_grouped(accs: list[float], other: list[float]) -> None:
    """mean ± sd over seeds and n, for each set of jobs whose overrides are the same but for seed=; a job alone in
    its set is not a group. Checked against the statistics module."""
    import statistics

    from digits.sweep import _groups_markdown, seed_groups

    rows = [
        {"overrides": f"lr=0.1,seed={i}", "status": "completed", "val_acc_tested": a, "test_acc": a}
        for i, a in enumerate(accs)
    ]
    rows += [
        {"overrides": f"lr=0.2,seed={i}", "status": "completed", "val_acc_tested": a, "test_acc": a}
        for i, a in enumerate(other)
    ]
    rows.append({"overrides": "lr=0.1,seed=9", "status": "failed", "val_acc_tested": None, "test_acc": None})
    groups = seed_groups(pd.DataFrame(rows)).set_index("group")
    assert list(groups.index) == (["lr=0.1", "lr=0.2"] if len(other) > 1 else ["lr=0.1"])
    assert groups.loc["lr=0.1", "n"] == len(accs)
    assert groups.loc["lr=0.1", "test_acc_mean"] == pytest.approx(statistics.mean(accs))
    assert groups.loc["lr=0.1", "test_acc_sd"] == pytest.approx(statistics.stdev(accs))
    page = _groups_markdown(groups.reset_index())
    assert f"| lr=0.1 | {len(accs)} | " in page
    assert f"{100 * statistics.mean(accs):.3f}% ± {100 * statistics.stdev(accs):.3f}" in page


def test_the_gpu_launcher_places_jobs_per_gpu_and_resumes(
    tmp_path: Path, grid_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hydra/launcher=gpus on a machine without GPUs: CUDA_VISIBLE_DEVICES=0,1 and trainer.accelerator=cpu exercise
    the placement. Four jobs at jobs_per_gpu=2: two on each GPU, each in its own process, all complete; the same
    command again skips them (the sweep's identity and resume hold as for the other launchers)."""
    pytest.importorskip("cloudpickle", reason="hydra/launcher=gpus needs the sweep extra")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    sweep = tmp_path / "gpus"
    args = ["-m", "hydra/launcher=gpus", "hydra.launcher.jobs_per_gpu=2", "trainer.accelerator=cpu"]
    args += [f"data.dir={grid_dir}", *FAST, "trainer.max_epochs=1", "lr=0.01,0.02,0.05,0.1", f"hydra.sweep.dir={sweep}"]
    run_cli(args, cwd=tmp_path)
    records = [metrics_of(d) for d in sorted(sweep.iterdir()) if (d / "metrics.json").is_file()]
    assert [r["status"] for r in records] == ["completed"] * 4
    assert sorted(r["cuda_visible_devices"] for r in records) == ["0", "0", "1", "1"]
    before = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    run_cli(args, cwd=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")} == before

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    proc = run_cli([*args[:-1], f"hydra.sweep.dir={tmp_path / 'none'}"], cwd=tmp_path, check=False)
    one_line_error(proc, "needs a GPU, and this command sees none")
    assert not (tmp_path / "none").exists()


def test_a_sweep_is_not_resumed_or_extended_on_changed_data(tmp_path: Path) -> None:
    """Its finished jobs trained on the data as it was: a re-run or an extension after train.csv changed would
    rank and ensemble jobs of two data sets together. Refused in one line naming the file, nothing written."""
    data = make_folder(tmp_path / "d", n_train=200, n_test=50, header="grid", test="labelled")
    sweep = tmp_path / "s"
    args = ["-m", f"data.dir={data}", *FAST, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    run_cli([*args, "lr=0.05,0.1"], cwd=tmp_path)
    lines = (data / "train.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",7"  # one pixel of one row
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in sweep.rglob("*"))
    for values in ("lr=0.05,0.1", "lr=0.05,0.1,0.2"):
        proc = run_cli([*args, values], cwd=tmp_path, check=False)
        one_line_error(proc, "data file train.csv")
        assert "since the sweep's job" in proc.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in sweep.rglob("*")) == before
