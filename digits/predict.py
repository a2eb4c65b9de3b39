"""Predict the digits in your own images with a trained run: `python -m digits.predict RUN_DIR INPUT...`.

INPUT is an image file (PNG, JPEG, BMP, GIF, TIFF, WebP, ...), a folder of them, or a CSV of pixels in the training
format (label column optional). Each image is prepared the way MNIST's digits were (digits/images.py): a photo or a
scan of dark ink on light paper works at any size, as does a white-on-black 28x28 PNG. Prints one row per image and
writes the table to predictions.csv (--out). An input that cannot be read is one line on stderr; the others are
still predicted, and the exit status is then 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits import runs
from digits.errors import ArgumentParser, UserError, cli, positive_int, report

CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass
class Batch:
    """Images ready for the model (uint8 [N, 28, 28]), with where each came from and its label if known."""

    names: list[str]
    images: np.ndarray
    labels: list[int | None]


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES)


def _image_files(folder: Path) -> list[Path]:
    from digits.images import IMAGE_SUFFIXES

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})", folder)
    return files


def read_inputs(inputs: list[Path], errors: list[UserError]) -> Batch:
    """Every readable input, prepared; each unreadable one adds a UserError to `errors` and is skipped."""
    from digits.data.csv import parse_csv, row_lines
    from digits.images import check_digit, load, mnist_style

    names: list[str] = []
    images: list[np.ndarray] = []
    labels: list[int | None] = []
    for given in inputs:
        try:
            if given.is_dir():
                files = _image_files(given)
            elif _is_csv(given):
                arrays = parse_csv(given)
                names += [f"{given}:{line}" for line in row_lines(given)]  # file line numbers
                images.append(arrays.images)
                labels += [None] * len(arrays) if arrays.labels is None else [int(v) for v in arrays.labels]
                continue
            else:
                files = [given]
        except UserError as e:
            errors.append(e)
            continue
        for f in files:
            try:
                img = load(f)
                prepared = check_digit(mnist_style(img), img, f)
            except UserError as e:
                errors.append(e)
                continue
            names.append(str(f))
            images.append(prepared[None])
            labels.append(None)
    stacked = np.concatenate(images) if images else np.zeros((0, 28, 28), np.uint8)
    return Batch(names, stacked, labels)


def predict(net, batch: Batch, batch_size: int = 256, precision: str | None = None) -> np.ndarray:
    """Softmax [N, 10] on the prepared images, in batches, in the run's precision (net: torch.nn.Module)."""
    import torch

    from digits.evaluate import predict_probs

    return predict_probs(net, torch.from_numpy(batch.images).unsqueeze(1), batch_size, precision=precision).numpy()


def table(batch: Batch, probs: np.ndarray):  # -> pd.DataFrame
    import pandas as pd

    order = np.argsort(-probs, axis=1)
    rows = []
    for i, name in enumerate(batch.names):
        first, second, third = order[i, :3]
        row = {
            "input": name,
            "label": int(first),
            "probability": round(float(probs[i, first]), 4),
            "second": f"{second} ({probs[i, second]:.3f})",
            "third": f"{third} ({probs[i, third]:.3f})",
        }
        if batch.labels[i] is not None:
            row["true_label"] = batch.labels[i]
        rows.append(row)
    return pd.DataFrame(rows)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m digits.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished training run (outputs/<date>/<time>)")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files, folders of images, digit CSVs")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="a new CSV file (default: outputs/predictions/<date>/<time>.csv, like every command's outputs)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=256)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out if args.out is not None else default_out()
    if out.exists():
        raise UserError("already exists; choose another --out (digits never replaces a file)", out)
    from digits.evaluate import net_from_checkpoint, precision_of, tested_checkpoint

    net, cfg = net_from_checkpoint(tested_checkpoint(args.run_dir))  # a bad run dir stops everything, first
    errors: list[UserError] = []
    batch = read_inputs(args.inputs, errors)
    for e in errors:
        report(e)
    if len(batch.names):
        frame = table(batch, predict(net, batch, args.batch_size, precision_of(cfg)))
        _print(frame)
        if args.out is None:
            out.parent.mkdir(parents=True, exist_ok=True)
        runs.write_new_file(out, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"{len(frame)} predictions -> {out}")
    if errors:
        sys.exit(2)


def default_out() -> Path:
    """outputs/predictions/<date>/<time>.csv under the working directory, where train writes its runs: never the
    working directory itself (in a checkout, an untracked file among the sources). _1, _2, ... if taken."""
    now = datetime.now()
    return runs.free_name(Path("outputs") / "predictions" / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}.csv")


def _print(frame) -> None:  # frame: pd.DataFrame
    with_truth = "true_label" in frame
    print(frame.to_string(index=False, max_colwidth=60))
    if with_truth:
        known = frame.dropna(subset=["true_label"])
        acc = float((known["label"] == known["true_label"]).mean())
        print(f"accuracy on the {len(known)} labelled rows: {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
