"""The benchmark scripts run as documented (on a tiny folder): they are how the README's speed claims are re-measured.
No timing is asserted, only that both loops ran and the lines the README quotes are printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def _bench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_train_speed_prints_both_loops_and_their_ratio(grid_dir: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # An override for (b), as in the README's commands (channels_last=true is also the default for `original`).
    args = ["--device", "cpu", "--data-dir", str(grid_dir), "--train-images", "256", "--epochs", "2"]
    args.append("channels_last=true")
    proc = _bench(args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "batches/epoch=2 (256 images), epochs=2" in out
    assert re.search(r"original CNN: 7\d\.\d MFLOP per training image", out)
    for loop in ("(a) plain PyTorch loop", "(b) digits trainer"):
        (line,) = [x for x in out.splitlines() if x.startswith(loop)]
        assert re.search(r"s/epoch, [\d,]+ img/s, [\d.]+ GFLOP/s, test acc \d+\.\d\d%", line), line
    assert re.search(r"^ratio=\d+\.\d{3}$", out, re.M)
    # (b) names what it was asked for, then the precision and layout that resolved to on this machine.
    assert re.search(r"^\(b\) digits trainer \(channels_last=true: (32-true|bf16-mixed), channels_last\)", out, re.M)
    assert not any(cwd.iterdir())  # the trainer's run dir was temporary


def test_train_speed_refuses_a_single_epoch(tmp_path: Path) -> None:
    proc = _bench(["--device", "cpu", "--epochs", "1"], tmp_path)
    assert proc.returncode == 2 and "--epochs must be at least 2" in proc.stderr


def test_the_photo_claim_is_its_committed_record() -> None:
    """The README's, docs/using-a-model.md's and RESULTS.md's photo numbers are the committed record's counts."""
    import json

    record = json.loads((ROOT / "benchmarks" / "records" / "predict_photos_2026-12-04_zen4.json").read_text())
    n, rows, photos = record["n"], record["rows_correct"], record["photos_correct"]
    as_rows, as_photos = f"{100 * rows / n:.2f}%", f"{100 * photos / n:.2f}%"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"read {as_photos} right, against {as_rows} as CSV rows, {rows - photos} images of the {n:,}" in readme
    for page in (ROOT / "docs" / "using-a-model.md", ROOT / "benchmarks" / "RESULTS.md"):
        text = " ".join(page.read_text().split())
        assert f"{as_photos} right ({photos:,}), against {as_rows} ({rows:,})" in text, page


def test_the_speed_record_is_what_results_md_quotes() -> None:
    import json

    record = json.loads((ROOT / "benchmarks" / "records" / "train_speed_2026-12-04_zen4.json").read_text())
    import statistics

    steady = {k: statistics.median(v["epoch_seconds"][1:]) for k, v in record["loops"].items()}  # as the script
    assert round(steady["b"] / steady["a"], 3) == round(record["ratio"], 3)
    text = " ".join((ROOT / "benchmarks" / "RESULTS.md").read_text().split())
    assert f"ratio {record['ratio']:.3f} with the defaults, inside that range" in text
