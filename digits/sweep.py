"""The sweep summary: one row per job, best first, written when a multirun ends (a Hydra callback)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from digits import runs, stats
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
    "test_ci_low",  # the test accuracy's 95% Wilson interval (digits/stats.py): 0.01 points is one MNIST test image
    "test_ci_high",
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
        row["test_ci_low"], row["test_ci_high"] = _test_interval(m)
        if m.get("error"):
            row["error"] = m["error"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "error"] if any("error" in r for r in rows) else COLUMNS)
    # Best first, by the validation accuracy of the weights each job tested (as ensemble --top and the Optuna sweeper
    # rank them): an epoch whose weights were never tested ranks nothing, and test accuracy never ranks anything.
    frame["_result"] = frame["status"].isin(runs.RESULT_STATUSES)  # a pruned or failed job never ranks first
    frame = frame.sort_values(["_result", "val_acc_tested"], ascending=False, na_position="last", kind="stable")
    return frame.drop(columns="_result").reset_index(drop=True)


def _test_interval(m: dict[str, Any]) -> tuple[float | None, float | None]:
    n, acc = (m.get("data") or {}).get("n_test"), m.get("test_acc")
    if not isinstance(n, int) or n <= 0 or not isinstance(acc, (int, float)):
        return None, None
    return stats.interval(round(acc * n), n)


def seed_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Jobs that differ only by `seed`, grouped: n, and the mean and sd over seeds of each accuracy. One seed's
    number says nothing of the spread a new seed would give; a group of them does. Empty when no two jobs share
    everything but the seed."""
    done = frame[frame["status"].isin(runs.RESULT_STATUSES)]
    keys = done["overrides"].map(_without_seed)
    rows = []
    for key, jobs in done.groupby(keys, sort=False):
        seeds = [o for ov in jobs["overrides"] for o in str(ov).split(",") if o.startswith("seed=")]
        if len(jobs) < 2 or len(seeds) != len(jobs):
            continue
        row: dict[str, Any] = {"group": key or "(all)", "n": len(jobs)}
        for col in ("val_acc_tested", "test_acc"):
            values = [float(v) for v in jobs[col] if v is not None and not pd.isna(v)]
            mean, sd = stats.mean_sd(values) if values else (None, None)
            row[f"{col}_mean"], row[f"{col}_sd"] = mean, sd
        rows.append(row)
    return pd.DataFrame(rows)


def _without_seed(overrides: Any) -> str:
    return ",".join(o for o in str(overrides).split(",") if not o.startswith("seed="))


def _groups_markdown(groups: pd.DataFrame) -> str:
    lines = [
        "| jobs differing only by seed | n | val_acc_tested, mean ± sd | test_acc, mean ± sd |",
        "|---|---|---|---|",
    ]
    for _, g in groups.iterrows():
        cells = [str(g["group"]).replace("|", "\\|"), str(int(g["n"]))]
        for col in ("val_acc_tested", "test_acc"):
            mean, sd = g[f"{col}_mean"], g[f"{col}_sd"]
            cells.append("" if mean is None or pd.isna(mean) else f"{100 * mean:.3f}% ± {100 * sd:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markdown(frame: pd.DataFrame) -> str:
    frame = frame.copy()
    if "test_ci_low" in frame:  # one column in the page: 99.51-99.75%
        frame.insert(
            list(frame.columns).index("test_ci_low"),
            "test_95%",
            [
                "" if lo is None or pd.isna(lo) else f"{100 * lo:.2f}-{100 * hi:.2f}%"
                for lo, hi in zip(frame["test_ci_low"], frame["test_ci_high"])
            ],
        )
        frame = frame.drop(columns=["test_ci_low", "test_ci_high"])
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
    groups = seed_groups(frame)
    page = _markdown(frame) + (f"\n{_groups_markdown(groups)}" if len(groups) else "")
    try:
        frame.to_csv(sweep_dir / "summary.csv", index=False)
        (sweep_dir / "summary.md").write_text(page)
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
        print((sweep_dir / "summary.md").read_text())
