"""Is run A better than run B, or is the difference noise? `python -m digits.compare RUN_A RUN_B [--json]`.

Each side is a finished run (its predictions.npz), a committed record (results/<study>/<job>, its softmax.npz), or a
sweep dir or study folder, which stands for the ensemble of its finished jobs (their mean softmax). Both must have
been tested on the same labelled images (the test split's fingerprint), else the comparison is refused. Prints each
side's test accuracy with its 95% Wilson interval, the discordant counts (A right and B wrong; A wrong and B right)
and McNemar's exact p-value (digits/stats.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits import runs, stats
from digits.errors import ArgumentParser, UserError, cli

SOFTMAX = "softmax.npz"  # the compact copy results/ commits (runs.RunDir.write_compact_softmax)


@dataclass
class Side:
    path: Path
    probs: np.ndarray
    labels: np.ndarray
    fingerprint: str
    members: int  # 1 for a run; the number of jobs averaged for a sweep


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(test probs, test labels, test fingerprint) of one run dir or committed record."""
    if runs.RunDir(path).predictions.is_file():
        from digits.ensemble import load_member  # a run's predictions.npz, checked as an ensemble member's are

        preds, where = load_member(path), runs.RunDir(path).predictions
    else:
        where = path / SOFTMAX
        try:
            with np.load(where, allow_pickle=False) as z:
                preds = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"is not a readable softmax file ({type(e).__name__})", where) from None
    probs, labels, fp = preds.get("test_probs"), preds.get("test_labels"), preds.get("test_fingerprint")
    if probs is None or fp is None:
        raise UserError("holds no test predictions", where)
    if labels is None:
        raise UserError("its test split is unlabelled (Kaggle's test.csv): there is nothing to compare on", where)
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != 10 or len(labels) != len(probs):
        raise UserError(f"holds test predictions of shape {probs.shape}, not [N, 10] for {len(labels)} labels", where)
    return probs, labels, str(fp)


def _has_predictions(path: Path) -> bool:
    return runs.RunDir(path).predictions.is_file() or (path / SOFTMAX).is_file()


def side(path: Path) -> Side:
    if not path.is_dir():
        raise UserError("no such run, record or sweep dir", path)
    if _has_predictions(path):
        probs, labels, fp = _read(path)
        return Side(path, probs, labels, fp, 1)
    jobs = [d for d in sorted(p for p in path.iterdir() if p.is_dir()) if _has_predictions(d)]
    jobs = [d for d in jobs if (runs.read_metrics(d) or {}).get("status") in runs.RESULT_STATUSES]
    if not jobs:
        raise UserError("holds no finished run with test predictions", path)
    read = [_read(d) for d in jobs]
    if len({fp for _, _, fp in read}) > 1:
        raise UserError("its jobs were tested on different images; compare them one by one", path)
    return Side(path, np.mean([p for p, _, _ in read], axis=0), read[0][1], read[0][2], len(jobs))


def compare(a: Side, b: Side) -> stats.Paired:
    if a.fingerprint != b.fingerprint or not np.array_equal(a.labels, b.labels):
        raise UserError(
            f"{a.path} and {b.path} were not tested on the same images (their test splits differ); a paired "
            "comparison needs the same images"
        )
    return stats.paired(a.probs.argmax(1), b.probs.argmax(1), a.labels)


def _describe(s: Side) -> str:
    return f"{s.path}" + (f" (ensemble of {s.members})" if s.members > 1 else "")


def text(a: Side, b: Side, r: stats.Paired) -> str:
    lines = []
    for name, s, correct in (("A", a, r.a_correct), ("B", b, r.b_correct)):
        lo, hi = stats.interval(correct, r.n)
        lines.append(
            f"{name}  {_describe(s)}: {100 * correct / r.n:.2f}% ({correct:,}/{r.n:,}), "
            f"{100 * stats.LEVEL:.0f}% interval {100 * lo:.2f}-{100 * hi:.2f}%"
        )
    lines.append(
        f"on the same {r.n:,} test images: A right and B wrong on {r.a_only}, A wrong and B right on {r.b_only}"
    )
    verdict = "beyond noise" if r.beyond_noise else "within noise"
    lines.append(f"McNemar's exact test: p = {r.p_value:.3g}, {verdict} at the {100 * stats.ALPHA:.0f}% level")
    return "\n".join(lines)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m digits.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="run dir, committed record, or sweep dir (its ensemble)")
    parser.add_argument("b", type=Path, help="the same kinds")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    a, b = side(args.a), side(args.b)
    r = compare(a, b)
    if args.json:
        out = {"a": str(a.path), "b": str(b.path), "a_members": a.members, "b_members": b.members, **r.to_json()}
        print(json.dumps(out, indent=2))
    else:
        print(text(a, b, r))


if __name__ == "__main__":
    main()
