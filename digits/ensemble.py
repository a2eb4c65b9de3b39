"""Average the softmax of several runs on the test split: `python -m digits.ensemble <run dirs | sweep dir>`.

Each run already holds its best checkpoint's test-set probabilities (predictions.npz), so an ensemble costs no
inference. Members must have predicted the same test images (checked by a fingerprint). `--top K` keeps the K
members whose tested weights have the best *validation* accuracy: the test split never chooses anything. Writes
ensemble.json (members, their accuracies, the ensemble's) and, for an unlabelled test split, submission.csv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np

from digits import runs
from digits.cli_args import check_writable
from digits.errors import ArgumentParser, UserError, cli


def members_of(paths: list[Path]) -> list[Path]:
    """Run dirs from the arguments: a run dir is itself, a sweep dir is its jobs with predictions."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise UserError("no such run or sweep dir", p)
        if runs.RunDir(p).predictions.is_file():
            out.append(p)
            continue
        jobs = [d for d in runs.job_dirs(p) if runs.RunDir(d).predictions.is_file()]
        if not jobs:
            raise UserError("holds no finished run (no predictions.npz)", p)
        out.extend(jobs)
    return out


def _load(run_dir: Path) -> dict[str, Any]:
    """A member's predictions, checked: a file from elsewhere or a damaged one is one line, not a traceback."""
    preds = runs.read_predictions(run_dir)
    probs = preds.get("test_probs")
    if probs is None:
        if "val_probs" in preds or "test_fingerprint" in preds:
            raise UserError("has no test predictions (its data folder had no test.csv)", run_dir)
        raise UserError("predictions.npz is not a digits predictions file (no test_probs)", run_dir)
    if probs.ndim != 2 or probs.shape[1] != 10 or not np.issubdtype(probs.dtype, np.floating):
        raise UserError(f"predictions.npz holds test_probs of shape {probs.shape}, expected [N, 10] floats", run_dir)
    if not np.isfinite(probs).all():
        raise UserError("predictions.npz holds non-finite probabilities", run_dir)
    labels = preds.get("test_labels")
    if labels is not None and (labels.shape != (len(probs),) or not np.issubdtype(labels.dtype, np.integer)):
        raise UserError("predictions.npz holds test_labels that do not match test_probs", run_dir)
    return preds


def ensemble(run_dirs: list[Path], top: int | None = None) -> dict[str, Any]:
    """Mean softmax over members; accuracies when the test split is labelled."""
    metrics = {d: runs.read_metrics(d) or {} for d in run_dirs}
    if top is not None:
        ranked = sorted(run_dirs, key=lambda d: -(runs.tested_val_acc(metrics[d]) or 0.0))
        run_dirs = ranked[:top]
    preds = {d: _load(d) for d in run_dirs}
    fingerprints = {str(p.get("test_fingerprint")) for p in preds.values()}
    if len(fingerprints) != 1:
        raise UserError("members were tested on different test sets; ensemble runs of one data folder only")
    probs = np.mean([p["test_probs"].astype(np.float64) for p in preds.values()], axis=0)
    labels = next(iter(preds.values())).get("test_labels")
    members = []
    for d in run_dirs:
        member_acc = None if labels is None else float((preds[d]["test_probs"].argmax(1) == labels).mean())
        members.append(
            {
                "run": str(d),
                "val_acc": runs.tested_val_acc(metrics[d]),
                "val_acc_best": metrics[d].get("val_acc_best"),
                "test_acc": member_acc,
            }
        )
    return {
        "members": members,
        "n_members": len(members),
        "test_acc": None if labels is None else float((probs.argmax(1) == labels).mean()),
        "mean_member_test_acc": None if labels is None else float(np.mean([m["test_acc"] for m in members])),
        "predictions": probs.argmax(1),
    }


def positive_int(text: str) -> int:
    """argparse type: a count of at least 1 (a zero or negative --top would silently slice the list)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _output_dir(given: Path | None) -> Path:
    """--out, or a new outputs/ensemble/<date>/<time>; never a dir that holds results, never a file."""
    if given is None:
        stamp = dt.datetime.now()
        return runs.unique_dir(Path("outputs") / "ensemble" / stamp.strftime("%Y-%m-%d"), stamp.strftime("%H-%M-%S"))
    if given.exists() and not given.is_dir():
        raise UserError("is a file; --out takes a directory", given)
    if runs.holds_results(given) or (given / "ensemble.json").exists():
        raise UserError("already holds results; choose another --out", given)
    return given


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m digits.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs and/or sweep dirs")
    parser.add_argument(
        "--top",
        type=positive_int,
        default=None,
        help="keep the K members whose tested weights have the best val accuracy",
    )
    parser.add_argument("--out", type=Path, default=None, help="output dir (default outputs/ensemble/<date>/<time>)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = _output_dir(args.out)
    check_writable(out)
    result = ensemble(members_of(args.paths), args.top)
    out.mkdir(parents=True, exist_ok=True)
    preds = result.pop("predictions")
    if result["test_acc"] is None:
        runs.write_submission(out / "submission.csv", preds)
        result["submission"] = str(out / "submission.csv")
    runs.write_json_atomic(out / "ensemble.json", result)
    for m in result["members"]:
        acc = "" if m["test_acc"] is None else f"  test {100 * m['test_acc']:.2f}%"
        val = m["val_acc"]
        print(f"member {m['run']}: val {100 * val:.2f}%{acc}" if val is not None else f"member {m['run']}{acc}")
    if result["test_acc"] is not None:
        print(
            f"ensemble of {result['n_members']}: test {100 * result['test_acc']:.2f}% "
            f"(members' mean {100 * result['mean_member_test_acc']:.2f}%)"
        )
    else:
        print(f"ensemble of {result['n_members']}: unlabelled test split; wrote {result['submission']}")
    print(out / "ensemble.json")


if __name__ == "__main__":
    main()
