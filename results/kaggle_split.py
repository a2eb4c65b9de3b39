"""A Kaggle-format folder cut from MNIST, and a scorer for its submissions: what `experiment=best` gives where Kaggle's
Digit Recognizer scores it, 42,000 labelled training rows and 28,000 unlabelled test rows (the competition's sizes),
drawn at random from MNIST's 70,000 images. The answer key is written beside the folder, never in it, so a run sees
only what a Kaggle user has.

    python results/kaggle_split.py make data/mnist data/kaggle_mnist     # train.csv, test.csv; kaggle_mnist_answers.csv
    python results/kaggle_split.py score data/kaggle_mnist_answers.csv outputs/.../submission.csv ... [--out scores.csv]

`--out` keeps the scores, one row a submission, where results/tables.py finds them for a run whose own test split
was unlabelled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from digits.data.csv import KAGGLE_COLUMNS as PIXELS


def answers_path(folder: Path) -> Path:
    return folder.parent / f"{folder.name}_answers.csv"


def make(src: Path, out: Path, n_train: int = 42_000, seed: int = 0) -> None:
    """Pool the labelled train.csv and test.csv of `src`, shuffle with `seed`, and write the first `n_train` rows as a
    labelled train.csv and the rest as an unlabelled test.csv (Kaggle's headers), with their labels in the key."""
    if out.exists() or answers_path(out).exists():
        raise SystemExit(f"{out} or its answer key exists already; choose another folder")
    frames = [pd.read_csv(src / name) for name in ("train.csv", "test.csv")]
    pooled = pd.concat(frames, ignore_index=True)
    origin = np.repeat(["train.csv", "test.csv"], [len(f) for f in frames])
    if list(pooled.columns) != ["label", *PIXELS]:
        raise SystemExit(f"{src}: expected labelled CSVs with Kaggle's columns (label, pixel0..pixel783)")
    if not 0 < n_train < len(pooled):
        raise SystemExit(f"--train-rows must be between 1 and {len(pooled) - 1}, got {n_train}")
    order = np.random.default_rng(seed).permutation(len(pooled))
    train, test = pooled.iloc[order[:n_train]], pooled.iloc[order[n_train:]]
    out.mkdir(parents=True)
    train.to_csv(out / "train.csv", index=False)
    test[PIXELS].to_csv(out / "test.csv", index=False)
    ids, labels = np.arange(1, len(test) + 1), test["label"].to_numpy()
    key = pd.DataFrame({"ImageId": ids, "Label": labels, "From": origin[order[n_train:]]})  # which source file
    key.to_csv(answers_path(out), index=False)
    print(f"{out}: {len(train):,} training rows, {len(test):,} test rows; answers in {answers_path(out)}")


def score_by_source(answers: Path, submission: Path) -> dict[str, tuple[int, int]]:
    """(correct, total) of a submission.csv for the test rows drawn from each source file (MNIST's train.csv and
    test.csv: its own test images and its training images are not equally hard). Both files must list the same
    ImageIds."""
    key = pd.read_csv(answers).set_index("ImageId")
    sub = pd.read_csv(submission).set_index("ImageId")["Label"]
    if sorted(sub.index) != sorted(key.index):
        raise SystemExit(f"{submission}: its ImageIds are not those of {answers}")
    correct = sub.loc[key.index] == key["Label"]
    return {
        name: (int(correct[key["From"] == name].sum()), int((key["From"] == name).sum()))
        for name in sorted(set(key["From"]))
    }


def score(answers: Path, submission: Path) -> tuple[int, int]:
    """(correct, total) over every test row."""
    return total(score_by_source(answers, submission))


def total(parts: dict[str, tuple[int, int]]) -> tuple[int, int]:
    return sum(c for c, _ in parts.values()), sum(t for _, t in parts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="cut a Kaggle-format folder from a labelled MNIST folder")
    m.add_argument("src", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--train-rows", type=int, default=42_000)
    m.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="accuracy of submission.csv files against the answer key")
    s.add_argument("answers", type=Path)
    s.add_argument("submissions", type=Path, nargs="+")
    s.add_argument("--out", type=Path, default=None, help="also write the scores to this CSV")
    args = parser.parse_args()
    if args.command == "make":
        make(args.src, args.out, args.train_rows, args.seed)
        return
    rows = []
    for path in args.submissions:
        by_source = score_by_source(args.answers, path)
        correct, n = total(by_source)
        row = {"submission": str(path), "correct": correct, "total": n, "accuracy": correct / n}
        for name, (c, t) in by_source.items():
            row |= {f"correct from {name}": c, f"total from {name}": t}
        rows.append(row)
        parts = "; ".join(f"{100 * c / t:.3f}% of the {t:,} from {name}" for name, (c, t) in by_source.items())
        print(f"{path}: {100 * correct / n:.3f}% ({n - correct} errors of {n:,}; {parts})")
    if args.out is not None:
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
