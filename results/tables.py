"""Print the README's results tables from the metrics.json files committed under results/.

    python results/tables.py compare_models optim_grid best

So every number in the README's tables can be traced to a run's own record. Seconds per epoch are the median over
the run's epochs (validation included): a median, because a few epochs of some runs shared the CPU with other work.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def jobs(study: str) -> list[tuple[str, dict]]:
    """Each job's (dir name, metrics.json) in sweep order (the number before the first underscore)."""
    dirs = [d for d in (HERE / study).iterdir() if (d / "metrics.json").is_file()]
    dirs.sort(key=lambda d: int(d.name.split("_", 1)[0]))
    return [(d.name, json.loads((d / "metrics.json").read_text())) for d in dirs]


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def table(study: str) -> str:
    rows = [
        "| job | val acc, last epoch | best val acc (epoch) | test acc | epochs | s / epoch |",
        "|---|---|---|---|---|---|",
    ]
    records = jobs(study)
    for name, m in records:
        varied = name.split("_", 1)[1]
        rows.append(
            f"| {varied} | {pct(m['val_acc'][-1])} | {pct(m['val_acc_best'])} ({m['best_epoch']}) "
            f"| {pct(m['test_acc'])} | {m['epochs']} | {statistics.median(m['epoch_seconds']):.1f} |"
        )
    if study == "best":
        test = [m["test_acc"] for _, m in records]
        val = [m["val_acc"][-1] for _, m in records]
        rows.append(
            f"| **mean ± sd** | {100 * statistics.mean(val):.2f}% ± {100 * statistics.stdev(val):.2f} | "
            f"| **{100 * statistics.mean(test):.3f}% ± {100 * statistics.stdev(test):.3f}** | | |"
        )
        ensemble = HERE / study / "ensemble.json"
        if ensemble.is_file():
            e = json.loads(ensemble.read_text())
            rows.append(f"| **ensemble of the {e['n_members']}** (mean softmax) | | | **{pct(e['test_acc'])}** | | |")
    return "\n".join(rows)


if __name__ == "__main__":
    for study in sys.argv[1:] or ["compare_models", "optim_grid", "best"]:
        print(f"{study}:\n\n{table(study)}\n")
