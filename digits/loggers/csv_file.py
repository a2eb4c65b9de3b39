"""logger=csv: <run dir>/csv/metrics.csv, one row per epoch, kept across a resume."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from digits.errors import UserError
from digits.loggers import epoch_step, final_metrics, hparams
from digits.runs import RunDir, RunRecord

log = logging.getLogger("digits.train")


def _read_rows(path: Path) -> dict[int, dict[str, float]]:
    """The rows of a run's own csv/metrics.csv, read strictly: a resume keeps them, so a file that is not what this
    logger writes (another header, a step that is not an epoch number, a cell that is not a number) is one line
    naming the row and column, not a traceback and not a history taken in on trust."""
    rows: dict[int, dict[str, float]] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or reader.fieldnames[0] != "step":
                raise UserError("is not the CSV this logger writes (its first column is not step)", path)
            for line, row in enumerate(reader, start=2):
                if None in row or None in row.values():
                    raise UserError("has a row of another width than its header", path, line)
                step_text = row.pop("step")
                if not step_text.isdigit() or int(step_text) < 1 or int(step_text) in rows:
                    raise UserError(f"{step_text!r} is not a new epoch number", path, line, "step")
                values: dict[str, float] = {}
                for key, text in row.items():
                    if text == "":
                        continue
                    try:
                        values[key] = float(text)
                    except ValueError:
                        raise UserError(f"{text!r} is not a number", path, line, key) from None
                rows[int(step_text)] = values
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot be read ({type(e).__name__})", path) from None
    return rows


class _EpochRows:
    """Lightning's CSV experiment writer, one row per epoch: the epoch's records (validation, then training) merge
    into one row, and the whole file is rewritten atomically at each save. A resumed run keeps the rows of the
    epochs its checkpoint holds; Lightning's own writer would delete the file."""

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.rows: dict[int, dict[str, Any]] = {}
        self.hparams: dict[str, Any] = {}
        self._fresh = True
        os.makedirs(log_dir, exist_ok=True)
        if os.path.isfile(self.metrics_file_path):
            self.rows = _read_rows(Path(self.metrics_file_path))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is None:
            step = max(self.rows, default=0) + 1
        if self._fresh:  # a resumed run logs from the epoch after its checkpoint: later rows were never finished
            self.rows = {s: r for s, r in self.rows.items() if s < step}
            self._fresh = False
            missing = [s for s in range(1, step) if s not in self.rows]
            if missing:  # a file cut short: say so, rather than resume into a history with a hole
                log.warning(
                    "%s has no row for epoch%s %s of the run; those rows stay missing (metrics.json has them)",
                    self.metrics_file_path,
                    "s" if len(missing) > 1 else "",
                    ", ".join(map(str, missing)),
                )
        row = self.rows.setdefault(step, {})
        row.update({k: float(v) for k, v in metrics.items()})

    def log_hparams(self, params: dict[str, Any]) -> None:
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def save(self) -> None:
        if not self.rows:
            return
        keys = sorted({k for r in self.rows.values() for k in r})
        tmp = f"{self.metrics_file_path}.{os.getpid()}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", *keys])
            writer.writeheader()
            for step in sorted(self.rows):
                writer.writerow({"step": step, **self.rows[step]})
        os.replace(tmp, self.metrics_file_path)


class EpochCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing <run dir>/csv/metrics.csv: one row per epoch, `step` = the epoch (from 1), the
    metric names TensorBoard and MLflow show (train/loss, val/acc, ...), and the test scores on the last row."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir, name=RunDir.CSV_DIR, version="")
        self._rows: _EpochRows | None = None

    @property
    def experiment(self) -> _EpochRows:  # type: ignore[override]
        if self._rows is None:
            self._rows = _EpochRows(self.log_dir)
        return self._rows

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics, step = epoch_step(metrics, step)
        if metrics:
            self.experiment.log_metrics(dict(metrics), step)

    def start(self, cfg: DictConfig) -> None:
        self.log_hyperparams(hparams(cfg))

    @rank_zero_only
    def finish(self, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
        final = final_metrics(record)
        if final and record.epochs:
            self.experiment.log_metrics(final, record.epochs)
        self.save()

    def stop(self, status: str) -> None:
        self.save()  # the epochs done so far
