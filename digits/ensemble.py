"""Average the softmax of several runs on the test split: `python -m digits.ensemble <run dirs | sweep dir>`.

Each run already holds its best checkpoint's test-set probabilities (predictions.npz), so an ensemble costs no
inference. Members must have predicted the same test images (checked by a fingerprint). The test split never
chooses anything: `--top K` keeps the K members whose tested weights have the best *validation* accuracy, each on its
own split; `--select K`, for runs that hold out the same validation images (`data.split_seed`), builds the ensemble
itself on them, adding one member at a time, the one that lowers the ensemble's validation log loss most (Caruana et
al., "Ensemble Selection from Libraries of Models", 2004). Writes ensemble.json (members, their accuracies, the
ensemble's) and, for an unlabelled test split, submission.csv.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from digits import runs
from digits.cli_args import check_writable
from digits.errors import ArgumentParser, UserError, cli, positive_int


def members_of(paths: list[Path]) -> list[Path]:
    """Run dirs from the arguments: a run dir is itself, a sweep dir is its jobs with predictions. A run named twice
    (itself and through its sweep) counts once: a mean that weighted it double would not be the ensemble asked for."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise UserError("no such run or sweep dir", p)
        if runs.RunDir(p).predictions.is_file():
            status = _status(p)
            if status not in runs.RESULT_STATUSES:
                raise UserError(f"is a {status or 'unfinished'} run, not a result; it is no ensemble member", p)
            out.append(p)
            continue
        jobs = [
            d for d in runs.job_dirs(p) if runs.RunDir(d).predictions.is_file() and _status(d) in runs.RESULT_STATUSES
        ]
        if not jobs:
            raise UserError("holds no finished run (no predictions.npz)", p)
        out.extend(jobs)
    unique: dict[Path, Path] = {}  # resolved path -> the first spelling given, in order
    for d in out:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def _status(run_dir: Path) -> str | None:
    return (runs.RunDir(run_dir).read_record() or {}).get("status")


def load_member(run_dir: Path) -> dict[str, Any]:
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


def validation_probs(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """A member's softmax on its validation split, from the weights it was tested with.

    predictions.npz holds test probabilities only, so these are computed: the split is rebuilt from the config the
    checkpoint stores, which gives back the very images the run never trained on (a few seconds a member on a CPU).
    Returns (probs, labels, fingerprint of the images and labels)."""
    from digits.data.datamodule import DigitsDataModule
    from digits.evaluate import net_from_checkpoint, precision_of, predict_probs, tested_checkpoint

    net, cfg = net_from_checkpoint(tested_checkpoint(run_dir))
    dm = DigitsDataModule.of_run(cfg, runs.RunDir(run_dir).read_fingerprint())
    if dm.val is None or not len(dm.val) or dm.val.labels is None:
        raise UserError("has no validation split (trained with data.val_fraction=0); --select needs one", run_dir)
    images, labels = dm.val.images.numpy(), dm.val.labels.numpy()
    fingerprint = hashlib.sha1(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()
    probs = predict_probs(net, dm.val.images, dm.eval_batch_size, precision=precision_of(cfg))
    return probs.numpy().astype(np.float64), labels, fingerprint


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class: it moves with every image's confidence, where accuracy
    on a few thousand images moves in steps of one error, and ties."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def select(run_dirs: list[Path], k: int) -> tuple[list[Path], dict[str, Any]]:
    """Greedy forward selection without replacement on the members' shared validation split: start empty, and add,
    k times, the member whose addition gives the mean softmax with the lowest validation log loss (ties: the first
    given). Members on different validation images cannot be scored together, so that is refused."""
    if k > len(run_dirs):
        raise UserError(f"--select {k} needs at least {k} runs; {len(run_dirs)} given")
    val, labels, fingerprints = {}, None, set()
    for d in run_dirs:
        val[d], labels, fp = validation_probs(d)
        fingerprints.add(fp)
    if len(fingerprints) != 1:
        raise UserError(
            "members hold out different validation images; --select needs runs of one data folder, "
            "data.val_fraction and data.split_seed"
        )
    assert labels is not None
    chosen: list[Path] = []
    total = np.zeros_like(next(iter(val.values())))
    steps = []
    for _ in range(k):
        scores = {d: log_loss((total + val[d]) / (len(chosen) + 1), labels) for d in run_dirs if d not in chosen}
        best = min(scores, key=lambda d: scores[d])
        chosen.append(best)
        total += val[best]
        mean = total / len(chosen)
        steps.append(
            {
                "run": str(best),
                "member_val_acc": float((val[best].argmax(1) == labels).mean()),
                "member_val_log_loss": log_loss(val[best], labels),
                "ensemble_val_acc": float((mean.argmax(1) == labels).mean()),
                "ensemble_val_log_loss": scores[best],
            }
        )
    record = {
        "by": "greedy forward selection on the shared validation split's log loss (Caruana et al. 2004)",
        "candidates": [str(d) for d in run_dirs],
        "val_images": len(labels),
        "steps": steps,
    }
    return chosen, record


def ensemble(run_dirs: list[Path], top: int | None = None, select_k: int | None = None) -> dict[str, Any]:
    """Mean softmax over members; accuracies when the test split is labelled."""
    metrics = {d: runs.read_metrics(d) or {} for d in run_dirs}
    selection = None
    if top is not None:
        ranked = sorted(run_dirs, key=lambda d: -(runs.tested_val_acc(metrics[d]) or 0.0))
        run_dirs = ranked[:top]
    elif select_k is not None:
        run_dirs, selection = select(run_dirs, select_k)
    preds = {d: load_member(d) for d in run_dirs}
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
        **({"selection": selection} if selection is not None else {}),
        "test_acc": None if labels is None else float((probs.argmax(1) == labels).mean()),
        "mean_member_test_acc": None if labels is None else float(np.mean([m["test_acc"] for m in members])),
        "predictions": probs.argmax(1),
    }


def _output_dir(given: Path | None) -> runs.RunDir:
    """--out, or a new outputs/ensemble/<date>/<time>, claimed under the run-dir rule (a new or empty dir, or an
    ensemble dir that a failed command left without results)."""
    if given is None:
        stamp = dt.datetime.now()
        given = runs.unique_dir(Path("outputs") / "ensemble" / stamp.strftime("%Y-%m-%d"), stamp.strftime("%H-%M-%S"))
    out = runs.RunDir(given)
    out.check_writable_as("ensemble")
    if (out.path / "ensemble.json").exists():
        raise UserError("already holds results (an ensemble); choose another --out", out.path)
    check_writable(out.path)
    return out


def _write(out: runs.RunDir, result: dict[str, Any]) -> None:
    """ensemble.json, and submission.csv for an unlabelled test split, into the claimed dir."""
    preds = result.pop("predictions")
    if result["test_acc"] is None:
        runs.write_submission(out.path / "submission.csv", preds)
        result["submission"] = str(out.path / "submission.csv")
    runs.write_json_atomic(out.path / "ensemble.json", result)


def _print(result: dict[str, Any]) -> None:
    for i, step in enumerate((result.get("selection") or {}).get("steps", []), 1):
        print(
            f"select {i}: {step['run']}  val {100 * step['member_val_acc']:.2f}%  "
            f"-> ensemble val {100 * step['ensemble_val_acc']:.2f}%, log loss {step['ensemble_val_log_loss']:.4f}"
        )
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


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m digits.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs and/or sweep dirs")
    parser.add_argument(
        "--top",
        type=positive_int,
        default=None,
        help="keep the K members whose tested weights have the best val accuracy",
    )
    parser.add_argument(
        "--select",
        type=positive_int,
        default=None,
        help="choose K members by greedy forward selection on a validation split they share (data.split_seed)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="a new or empty dir (default outputs/ensemble/<date>/<time>)"
    )
    return parser


@cli
def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.top is not None and args.select is not None:
        parser.error("--top and --select are two ways to choose members; give one")
    out = _output_dir(args.out)
    result = ensemble(members_of(args.paths), args.top, args.select)
    out.claim("ensemble")
    try:
        _write(out, result)
    finally:
        out.release()
    _print(result)
    print(out.path / "ensemble.json")


if __name__ == "__main__":
    main()
