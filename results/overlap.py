"""How alike are the mistakes of two families of runs? For every pair of runs, the share of their test errors that
they have in common (errors of both / errors of either), averaged within each sweep and across the two.

    python results/overlap.py outputs/results/best_bf16 outputs/results/best_deotte

An ensemble gains only where its members err on different images, so this says whether a second architecture
brings members that differ more than seeds of one do. It describes runs already chosen and chooses nothing.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

from digits import runs


def errors(run_dir: Path) -> set[int]:
    preds = runs.read_predictions(run_dir)
    return set(np.flatnonzero(preds["test_probs"].argmax(1) != preds["test_labels"]).tolist())


def shared(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b)


def main(sweeps: list[str]) -> None:
    families = {
        Path(s).name: [errors(d) for d in runs.job_dirs(s) if runs.RunDir(d).predictions.is_file()] for s in sweeps
    }
    for name, errs in families.items():
        pairs = [shared(a, b) for a, b in itertools.combinations(errs, 2)]
        within = f", {100 * statistics.mean(pairs):.1f}% of errors shared by a pair" if pairs else ""
        print(f"within {name}: {len(errs)} runs, {statistics.mean(len(e) for e in errs):.1f} errors a run{within}")
    for (n1, e1), (n2, e2) in itertools.combinations(families.items(), 2):
        pairs = [shared(a, b) for a in e1 for b in e2]
        print(f"across {n1} / {n2}: {100 * statistics.mean(pairs):.1f}% of errors shared by a pair")


if __name__ == "__main__":
    main(sys.argv[1:])
