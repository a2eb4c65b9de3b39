"""How well `digits.predict` reads digits as photos, against the same digits as CSV rows, for one trained run.

    python benchmarks/predict_photos.py outputs/<date>/<time> [--n 2000] [--data DIR] [--record FILE.json]

N test digits (a seeded sample of test.csv) are drawn as photo-like files: dark ink on white, cream, grey or pink
paper, enlarged to 28, 56, 150 or 400 px, placed off-centre with margins, saved as PNG or JPEG. Both sets go through
`python -m digits.predict`; the two accuracies are printed, then their difference. --record writes the run's raw
numbers (counts, accuracies, machine, versions) as JSON, the form benchmarks/records/ commits.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PAPERS = [(255, 255, 255), (250, 240, 200), (235, 235, 235), (255, 250, 245)]
INKS = [(0, 0, 0), (20, 30, 140), (60, 60, 60), (120, 20, 20)]


def draw(images: np.ndarray, labels: np.ndarray, folder: Path, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    for k, (img, label) in enumerate(zip(images, labels)):
        size = int(rng.choice([28, 56, 150, 400]))
        digit = Image.fromarray(255 - img).resize((size, size), Image.Resampling.BILINEAR)
        c = int(rng.integers(len(PAPERS)))
        w, h = size + int(rng.integers(size // 4, size)), size + int(rng.integers(size // 4, size))
        page = Image.new("RGB", (w, h), PAPERS[c])
        ink = Image.new("RGB", (size, size), INKS[c])
        where = (int(rng.integers(0, w - size)), int(rng.integers(0, h - size)))
        page.paste(ink, where, mask=Image.eval(digit, lambda v: 255 - v))
        page.save(folder / f"{k:05d}_{label}.{'png' if k % 2 else 'jpg'}", quality=90)


def correct(run: Path, inputs: Path, out: Path) -> int:
    subprocess.run(
        [sys.executable, "-m", "digits.predict", str(run), str(inputs), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    pred = pd.read_csv(out)
    truth = pred["true_label"] if "true_label" in pred else pred["input"].str.extract(r"_(\d)\.\w+$")[0].astype(int)
    return int((pred["label"] == truth).sum())


def cpu_name() -> str:
    """'AMD EPYC (family 25 model 17), 2 cores': the CPU as /proc/cpuinfo names it, where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines()) if v}
    cores = info.count("processor\t:")
    name, family, model = field.get("model name", platform.machine()), field.get("cpu family"), field.get("model")
    return f"{name} (family {family} model {model}), {cores} cores"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--data", type=Path, default=None, help="default: the embedded MNIST's place (digits.cache)")
    p.add_argument("--record", type=Path, default=None, help="write the raw numbers here as JSON")
    args = p.parse_args()
    from digits.cache import mnist_root

    args.data = args.data or Path(mnist_root())
    from digits.data.csv import data_files, load_csv

    _, test_file = data_files(args.data)
    test = load_csv(test_file, require_label=True)
    idx = np.random.default_rng(7).choice(len(test), args.n, replace=False)
    images, labels = test.images[idx], test.labels[idx]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        draw(images, labels, tmp / "photos")
        rows = pd.DataFrame(images.reshape(len(idx), -1), columns=[f"pixel{j}" for j in range(784)])
        rows.insert(0, "label", labels)
        rows.to_csv(tmp / "rows.csv", index=False)
        rows_right = correct(args.run.resolve(), tmp / "rows.csv", tmp / "rows_pred.csv")
        photos_right = correct(args.run.resolve(), tmp / "photos", tmp / "photo_pred.csv")
    as_rows, as_photos = rows_right / args.n, photos_right / args.n
    if args.record:
        record = {
            "benchmark": "predict_photos",
            "run": args.run.name,
            "n": args.n,
            "rows_correct": rows_right,
            "photos_correct": photos_right,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": cpu_name(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        args.record.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{args.n} test digits: as CSV rows {100 * as_rows:.2f}%, as photos {100 * as_photos:.2f}%, "
        f"difference {100 * (as_photos - as_rows):+.2f} points"
    )


if __name__ == "__main__":
    main()
