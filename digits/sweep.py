"""The sweep summary: one row per job, best first, written when a multirun ends (a Hydra callback)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from digits import runs
from digits.errors import UserError

log = logging.getLogger(__name__)

# val_acc_tested: the validation accuracy of the weights that were tested (runs.tested_val_acc), which ranks the jobs;
# it differs from val_acc_best when a run is tested with its last or averaged weights.
COLUMNS = [
    "job",
    "overrides",
    "status",
    "epochs",
    "best_epoch",
    "val_acc_best",
    "val_acc_tested",
    "test_acc",
    "train_seconds",
]


@dataclass
class SweepResult:
    sweep_dir: Path
    jobs: int
    ok: int


LAST: SweepResult | None = None  # read by digits.train.main for the exit status


def summarize(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job dir: its overrides and what its metrics.json says (status 'missing' when there is none)."""
    rows = []
    jobs = runs.job_dirs(Path(sweep_dir))
    names = runs.labels(jobs)
    for d in jobs:
        m = runs.read_metrics(d) or {"status": "missing"}
        row: dict[str, Any] = {"job": d.name, "overrides": names[d]}
        row.update({k: m.get(k) for k in COLUMNS[2:]})
        row["val_acc_tested"] = runs.tested_val_acc(m)
        if m.get("error"):
            row["error"] = m["error"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "error"] if any("error" in r for r in rows) else COLUMNS)
    # Best first, by the validation accuracy of the weights each job tested (as ensemble --top and the Optuna sweeper
    # rank them): an epoch whose weights were never tested ranks nothing, and test accuracy never ranks anything.
    frame["_result"] = frame["status"].isin(runs.RESULT_STATUSES)  # a pruned or failed job never ranks first
    frame = frame.sort_values(["_result", "val_acc_tested"], ascending=False, na_position="last", kind="stable")
    return frame.drop(columns="_result").reset_index(drop=True)


def _markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if v is None or (isinstance(v, float) and pd.isna(v)):
                cells.append("")
            elif c in ("val_acc_best", "val_acc_tested", "test_acc"):
                cells.append(f"{100 * float(v):.2f}%")
            elif c == "train_seconds":
                cells.append(f"{float(v):.1f}")
            elif c in ("epochs", "best_epoch"):
                cells.append(str(int(v)))
            else:
                cells.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    frame = summarize(sweep_dir)
    try:
        frame.to_csv(sweep_dir / "summary.csv", index=False)
        (sweep_dir / "summary.md").write_text(_markdown(frame))
    except OSError as e:
        raise UserError(f"cannot write the summary ({e.strerror or e})", sweep_dir) from None
    return frame


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        frame = write_summary(sweep_dir)
        ok = int(frame["status"].isin(runs.RESULT_STATUSES).sum())
        LAST = SweepResult(sweep_dir, len(frame), ok)
        print(f"\nSweep summary ({ok}/{len(frame)} jobs with a result): {sweep_dir / 'summary.md'}")
        print(_markdown(frame))
