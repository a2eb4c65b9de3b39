"""Test helpers: tiny, learnable digit CSVs written in the test, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from digits.data.csv import GRID_COLUMNS, KAGGLE_COLUMNS
from helpers.forkclient import run_forked, run_fresh

ROOT = Path(__file__).resolve().parents[2]


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images [n, 784] uint8 and labels [n]: class c is a bright 8x8 block at one of 10 places, shifted by up to
    1 pixel, on noise. Not digits, but learnable in a few steps by every model, which is what tests need."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, c in enumerate(labels):
        r, col = 2 + 9 * (c // 4), 1 + 7 * (c % 4)
        dr, dc = rng.integers(-1, 2, size=2)
        r, col = int(np.clip(r + dr, 0, 20)), int(np.clip(col + dc, 0, 20))
        images[i, r : r + 8, col : col + 8] = rng.integers(180, 256, size=(8, 8))
    return images.reshape(n, 784).astype(np.uint8), labels.astype(np.int64)


def write_digits_csv(path: Path, images: np.ndarray, labels: np.ndarray | None, header: str = "kaggle") -> Path:
    columns = KAGGLE_COLUMNS if header == "kaggle" else GRID_COLUMNS
    frame = pd.DataFrame(images, columns=columns)
    if labels is not None:
        frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)
    return path


def make_folder(
    root: Path, n_train: int = 600, n_test: int = 200, header: str = "kaggle", test: str | None = "unlabelled"
) -> Path:
    """A data folder like Kaggle's (test unlabelled) or a labelled MNIST dump (test labelled)."""
    root.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_digits(n_train, seed=1)
    write_digits_csv(root / "train.csv", x, y, header)
    if test is not None:
        xt, yt = synthetic_digits(n_test, seed=2)
        write_digits_csv(root / "test.csv", xt, yt if test == "labelled" else None, header)
        np.save(root.parent / f"{root.name}_answers.npy", yt)  # the answer key stays outside the data folder
    return root


# What every CLI test runs with: the project's own debug config (small batches, no progress bar), two epochs.
FAST = ["debug=fast", "trainer.max_epochs=2"]


def cli_env(cwd: Path) -> dict[str, str]:
    """The environment a CLI test runs in: this checkout importable, the embedded data kept inside the test's dir.
    Under pytest-xdist each worker's runs get one thread (OMP_NUM_THREADS=1): the workers already fill the cores,
    and more threads would only fight over them."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "DIGITS_DATA": str(cwd / "data")}
    if "PYTEST_XDIST_WORKER" in os.environ:
        env.setdefault("OMP_NUM_THREADS", "1")
    if env.get("MUTANT_UNDER_TEST") == "stats":  # mutmut's coverage pass counts calls in the test process only
        del env["MUTANT_UNDER_TEST"]
    return env


def run_cli(
    args: list[str], cwd: Path, module: str = "digits.train", timeout: int = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in cwd, as a user runs it: its own process, exit status, stdout and stderr. The
    process is forked from a server that has already imported the libraries (tests/helpers/forkserver.py), unless
    DIGITS_TESTS_FRESH=1 asks for a new interpreter each time."""
    env = {**cli_env(cwd), "PYTHONWARNINGS": "ignore"}
    run = run_fresh if os.environ.get("DIGITS_TESTS_FRESH") == "1" else run_forked
    proc = run(module, args, cwd=cwd, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m digits.train ARGS` in the background, for tests that signal it. SIGINT starts at its default: a
    shell starts background jobs with SIGINT ignored, which a run rightly keeps, and the test must not depend on
    how pytest itself was started."""
    return subprocess.Popen(
        [sys.executable, "-m", "digits.train", *args],
        cwd=cwd,
        env={**cli_env(cwd), "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread's stack: see finish()
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """Wait for a start_cli process; if it has not ended by the timeout, fail with where each of its threads was
    (SIGABRT makes faulthandler print them), so that a rare hang says where it hangs."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        stacks = err.split("\nExtension modules:")[0]  # faulthandler ends with a long list of C modules
        raise AssertionError(f"still running after {timeout} s; its threads then:\n{stacks[-6000:]}") from None


def only_run_dir(cwd: Path) -> Path:
    dirs = [p.parent for p in (cwd / "outputs").glob("*/*/.hydra")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def job_dir(sweep_dir: Path, num: int) -> Path:
    """A sweep's job dir by its number: `<num>_<what it varied>`."""
    (found,) = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name.split("_", 1)[0] == str(num)]
    return found


def font_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n MNIST-style rows [n, 784] of typeset digits (Pillow's built-in font, random size, slant and thickness) and
    their labels: real digit shapes, position-free like MNIST, so a model trained on them reads drawn digits."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    out = np.zeros((n, 28, 28), np.uint8)
    fonts = {size: ImageFont.load_default(size=size) for size in range(40, 64, 4)}
    for i, d in enumerate(labels):
        font = fonts[int(rng.choice(list(fonts)))]
        canvas = Image.new("L", (96, 96), 0)
        ImageDraw.Draw(canvas).text(
            (20, 8), str(d), fill=255, font=font, stroke_width=int(rng.integers(1, 4)), stroke_fill=255
        )
        canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
        a = np.asarray(canvas)
        rows, cols = np.flatnonzero(a.max(1) > 64), np.flatnonzero(a.max(0) > 64)
        crop = canvas.crop((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
        scale = 20 / max(crop.size)
        crop = crop.resize(
            (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.BOX
        )
        box = np.asarray(crop, np.float32)
        ys, xs = np.indices(box.shape)
        cy, cx = (ys * box).sum() / box.sum(), (xs * box).sum() / box.sum()
        top = int(np.clip(round(14 - cy), 0, 28 - box.shape[0]))
        left = int(np.clip(round(14 - cx), 0, 28 - box.shape[1]))
        out[i, top : top + box.shape[0], left : left + box.shape[1]] = box.astype(np.uint8)
    return out.reshape(n, 784), labels.astype(np.int64)


def font_folder(root: Path, n_train: int = 3000, n_test: int = 400) -> Path:
    """A labelled data folder of typeset digits (train.csv and test.csv)."""
    root.mkdir(parents=True, exist_ok=True)
    x, y = font_digits(n_train, seed=1)
    write_digits_csv(root / "train.csv", x, y)
    xt, yt = font_digits(n_test, seed=2)
    write_digits_csv(root / "test.csv", xt, yt)
    return root


def one_line_error(proc: subprocess.CompletedProcess, expect: str) -> None:
    """The CLI's promise for a user's mistake: exit status 2 and one line, `digits: error: ...`, saying `expect`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("digits: error: ") and expect in lines[0], proc.stderr[-2000:]
