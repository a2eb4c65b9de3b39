"""The loggers a run can write to: TensorBoard (the default), a CSV file and MLflow, alone or together (`logger=many`).

Every scalar this project logs is per epoch. Lightning writes them at the optimizer step and adds an `epoch` scalar
of its own, so runs with different batch sizes do not line up and the first chart is an epoch-versus-step line. Each
logger here writes every record at step = epoch, counted from 1 as metrics.json counts, and drops `epoch` itself;
metrics.json's per-epoch lists hold the same numbers, so any logger's curves can be held against the run's record.

Each logger also has `start` (before training: parameters, and for MLflow the run itself, so a server that does not
answer is one line before any epoch), `finish` (after testing: final metrics, figures, artifacts) and `stop` (an
interrupted or failed run). metrics.json stays the record every tool reads; the loggers are views of it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from digits import fingerprint, plots
from digits.errors import UserError
from digits.runs import RunDir, RunRecord, write_json_atomic
from digits.schema import choice, plain_config, plain_name

log = logging.getLogger("digits.train")


def epoch_step(metrics: Mapping[str, float], step: int | None) -> tuple[dict[str, float], int | None]:
    """Lightning's record with its `epoch` entry turned into the step (from 1)."""
    metrics = dict(metrics)
    epoch = metrics.pop("epoch", None)  # Lightning adds it to every record it logs
    return metrics, (int(epoch) + 1 if epoch is not None else step)


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The knobs a comparison filters by, as they ran (a cycled momentum says so)."""
    sched = cfg.get("scheduler") or {}
    momentum = cfg.optim.get("momentum", (cfg.optim.get("betas") or [0.0])[0])
    if sched.get("cycle_momentum"):
        momentum = f"cycled {sched.base_momentum}-{sched.max_momentum}"
    flat = {
        "model": choice("model", cfg),
        "optim": choice("optim", cfg),
        "scheduler": choice("scheduler", cfg) if sched else "none",
        "lr": cfg.lr,
        "seed": cfg.seed,
        "init": plain_name(cfg.init),
        "l1": cfg.l1,
        "weight_decay": cfg.optim.get("weight_decay", 0.0),
        "momentum": momentum,
        "label_smoothing": cfg.label_smoothing,
        "dropout": cfg.model.get("dropout", 0.0),
        "batch_size": cfg.data.batch_size,
        "augment": cfg.data.augment,
        "max_epochs": cfg.trainer.max_epochs,
        "final_weights": plain_name(cfg.final_weights),
    }
    return {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in flat.items()}


def final_metrics(record: RunRecord) -> dict[str, float]:
    """What a finished run adds at its last epoch: the test scores (and the averaged weights' validation score)."""
    out = {}
    if record.test_acc is not None:
        out["test/acc"] = record.test_acc
    if record.test_loss is not None:
        out["test/loss"] = record.test_loss
    if record.val_acc_average is not None:
        out["val/acc_average"] = record.val_acc_average
    return out


# --- building them ------------------------------------------------------------------------------------------------
def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The config's loggers (`logger.tensorboard`, `logger.csv`, `logger.mlflow`), not yet started. Raises UserError
    (one line) for an MLflow server that does not answer, before anything is written."""
    from hydra.utils import instantiate

    made = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        if name == "mlflow":
            fill_mlflow(cfg)
        made.append(instantiate(cfg.logger[name]))
    return made


def start(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Once the run dir is known to be this run's: parameters logged, an MLflow run created or continued."""
    for lg in trainer.loggers:
        if hasattr(lg, "start"):
            lg.start(cfg)


def finish(trainer: L.Trainer, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
    for lg in trainer.loggers:
        if hasattr(lg, "finish"):
            lg.finish(cfg, run_dir, record, preds)


def stop(trainer: L.Trainer, status: str) -> None:
    """An interrupted or failed run: each logger says so (MLflow marks its run KILLED or FAILED)."""
    for lg in trainer.loggers:
        if hasattr(lg, "stop"):
            lg.stop(status)


# --- TensorBoard --------------------------------------------------------------------------------------------------
class EpochTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger whose step is the epoch (from 1), and whose finished run fills TensorBoard's HParams
    dashboard and adds the confusion matrix and the misclassified digits."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics, step = epoch_step(metrics, step)
        if metrics:
            super().log_metrics(metrics, step)

    def start(self, cfg: DictConfig) -> None:
        self.log_hyperparams(hparams(cfg))  # hparams.yaml holds them from the start; final metrics come at the end

    @rank_zero_only
    def finish(self, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
        final = {"hparams/val_acc_best": record.val_acc_best or 0.0}
        if record.test_acc is not None:
            final["hparams/test_acc"] = record.test_acc
            self.log_metrics({"test/acc": record.test_acc, "test/loss": record.test_loss or 0.0}, record.epochs)
        self.log_hyperparams(hparams(cfg), final)
        split, probs, labels = plots.labelled_split(preds)
        if probs is not None and labels is not None:
            writer = self.experiment
            writer.add_figure(f"{split}/confusion_matrix", plots.confusion_figure(probs, labels, split), record.epochs)
            fig = plots.mistakes_figure(probs, labels, preds["mistake_index"], preds["mistake_images"])
            writer.add_figure(f"{split}/misclassified", fig, record.epochs)
        self.finalize("success")


# --- CSV ----------------------------------------------------------------------------------------------------------
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


# --- MLflow -------------------------------------------------------------------------------------------------------
def fill_mlflow(cfg: DictConfig) -> None:
    """The MLflow keys a config leaves open, filled in place (config.yaml then says where the run went): the
    tracking URI (a SQLite store under outputs/), the experiment (the `experiment=` config's name, else the sweep
    dir's, else `digits`)."""
    node = cfg.logger.mlflow
    if not node.get("tracking_uri"):
        node.tracking_uri = "sqlite:///" + str(Path("outputs", "mlflow.db").absolute())
    if not node.get("experiment_name"):
        node.experiment_name = _default_experiment(cfg)


def _default_experiment(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return "digits"
    chosen = hc.runtime.choices.get("experiment")
    if chosen not in (None, "null", "None"):
        return str(chosen)
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)
        with contextlib.suppress(ValueError):
            sweep = sweep.absolute().relative_to(Path("outputs").absolute())
        return str(sweep)
    return "digits"


def git_commit() -> str:
    """The commit of this project's source the run trained with, `-dirty` when files differ from it; `unknown`
    outside a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "digits", "conf"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite tracking URI, else None."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Parallel jobs (hydra/launcher=joblib) sharing one SQLite store: one of them creates its tables at a time."""
    db = _sqlite_file(uri)
    if db is None:
        yield
        return
    import fcntl

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(db.with_name(f".{db.name}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise UserError(f"logger.mlflow.tracking_uri={uri}: cannot write there ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer MLflow's health check now, not after an hour of training."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status == 200:
                return
            why = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        why = f"HTTP {e.code} from /health: not an MLflow server?"
    except (urllib.error.URLError, OSError) as e:
        why = str(getattr(e, "reason", e))
    raise UserError(
        f"logger.mlflow.tracking_uri={uri}: no MLflow server answers ({why}); start one "
        "(mlflow server --host 127.0.0.1 --port 5000) or leave tracking_uri unset for a local store under outputs/"
    )


class EpochMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, one MLflow run per run dir.

    The run is named after the run dir (a sweep job's dir says what it varied: `3_lr=0.01,optim=adam`) and created
    before training; its id is kept in the run dir (mlflow.json), so a resumed run continues the same MLflow run.
    Parameters: the resolved config, flattened. Metrics at step = epoch. Tags: status, precision, device, git commit,
    run dir. At the end: the test scores, config.yaml, metrics.json, the run's figures, and on request the tested
    checkpoint and an ONNX export."""

    def __init__(
        self,
        run_dir: str,
        tracking_uri: str,
        experiment_name: str,
        tags: dict[str, str] | None = None,
        log_checkpoint: bool = False,
        log_onnx: bool = False,
    ) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise UserError('logger=mlflow needs MLflow: pip install -e ".[track]"') from None
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a lost server costs seconds, not minutes
        check_server(tracking_uri)
        self.run_dir = RunDir(run_dir)
        stored = self._stored(tracking_uri)
        if stored is not None:
            stored = self._bound(tracking_uri, stored)
        db = _sqlite_file(tracking_uri)  # local: the artifacts beside the database, not in ./mlruns
        artifacts = (db.parent / "mlartifacts").absolute().as_uri() if db is not None else None
        with _store_lock(tracking_uri):  # a new SQLite store gets its tables here: one process at a time
            super().__init__(
                experiment_name=experiment_name,
                run_name=self.run_dir.path.name,
                tracking_uri=tracking_uri,
                tags={**(tags or {}), "digits.run_dir": str(self.run_dir.path.absolute())},
                artifact_location=artifacts,
                run_id=stored,
            )
            if db is not None:
                self._mlflow_client.search_experiments(max_results=1)
        self.log_checkpoint, self.log_onnx = log_checkpoint, log_onnx
        self._lost: str | None = None

    def _stored(self, uri: str) -> str | None:
        """The MLflow run this run dir already has on this tracking server (a resume), if any."""
        import json

        try:
            kept = json.loads(self.run_dir.mlflow_file.read_text())
        except (OSError, ValueError):
            return None
        return kept.get("run_id") if isinstance(kept, dict) and kept.get("tracking_uri") == uri else None

    def _bound(self, uri: str, run_id: str) -> str | None:
        """The MLflow run mlflow.json names, if it is this run's: its own tags name this run dir (or one that is
        gone: the dir was moved) and this run's fingerprint. A copied dir's mlflow.json names the original's run,
        and an edited one any run: logging there would mix two runs' epochs, so this run gets a new MLflow run."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            with _store_lock(uri):
                tags = MlflowClient(uri).get_run(run_id).data.tags
        except MlflowException:
            tags = None
        mine = str(self.run_dir.path.absolute())
        digest = (self.run_dir.read_fingerprint() or {}).get("digest")
        why = None
        if tags is None:
            why = "is not on this tracking server"
        elif tags.get("digits.fingerprint") not in (None, digest):
            why = "belongs to another run (another fingerprint)"
        elif tags.get("digits.run_dir") not in (None, mine) and Path(tags["digits.run_dir"]).exists():
            why = f"belongs to the run dir {tags['digits.run_dir']}, of which this one is a copy"
        if why is None:
            return run_id
        log.warning("MLflow: the run %s that mlflow.json names %s; this run logs to a new MLflow run", run_id, why)
        return None

    @rank_zero_only
    def start(self, cfg: DictConfig) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        uri = self._tracking_uri
        resumed = self._run_id is not None
        try:
            with _store_lock(uri):
                if self._experiment_id is None and self._run_id is None:
                    self._experiment_id = self._find_or_create_experiment()
                client, run_id = self.experiment, self.run_id
                assert run_id is not None
                have = client.get_run(run_id).data.params if resumed else {}
                flat = fingerprint.flatten(plain_config(cfg))  # lists stay one value
                params = [Param(k, "null" if v is None else str(v)) for k, v in flat.items() if k not in have]
                tags = {"status": "running", "precision": str(cfg.trainer.precision), "git_commit": git_commit()}
                tags["digits.run_dir"] = str(self.run_dir.path.absolute())  # a moved dir's resume renames it
                tags["digits.fingerprint"] = str((self.run_dir.read_fingerprint() or {}).get("digest"))
                tags.update({"digits.sweep_dir": str(Path(cfg.paths.output_dir).absolute().parent)} if _swept() else {})
                for i in range(0, len(params), 100):
                    client.log_batch(run_id, params=params[i : i + 100])
                client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
                if resumed:
                    client.update_run(run_id, status="RUNNING")
        except MlflowException as e:
            raise UserError(f"logger.mlflow.tracking_uri={uri}: {' '.join(str(e).split())[:300]}") from None
        write_json_atomic(
            self.run_dir.mlflow_file,
            {"tracking_uri": uri, "experiment_id": self._experiment_id, "run_id": run_id},
        )
        log.info("MLflow: run %s in experiment %r at %s", run_id, self._experiment_name, uri)

    def _find_or_create_experiment(self) -> str:
        """The experiment's id; created if new. Jobs starting together on one server may both find it missing: the
        one whose create fails finds the other's."""
        from mlflow.exceptions import MlflowException

        client, name = self._mlflow_client, self._experiment_name
        for attempt in range(2):
            found = client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    raise UserError(
                        f"logger.mlflow.experiment_name={name}: that MLflow experiment is deleted; restore it "
                        "(mlflow experiments restore) or choose another name"
                    )
                return str(found.experiment_id)
            try:
                return str(client.create_experiment(name, artifact_location=self._artifact_location))
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS" or attempt:
                    raise
        raise AssertionError("unreachable")

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics, step = epoch_step(metrics, step)
        if metrics:
            self._guard(super().log_metrics, metrics, step)

    def _guard(self, call: Any, *args: Any) -> None:
        """A server lost mid-run costs the MLflow copy, never the training: metrics.json keeps the record."""
        if self._lost is not None:
            return
        try:
            call(*args)
        except Exception as e:  # MlflowException, or requests' own when the server went away
            self._lost = " ".join(str(e).split())[:200]
            log.warning("MLflow: logging stopped (%s); metrics.json keeps every epoch", self._lost)

    def finalize(self, status: str = "success") -> None:
        if status != "success":  # success is finish()'s: after testing, not when fit returns
            self.stop("failed" if status == "failed" else "interrupted")

    @rank_zero_only
    def stop(self, status: str) -> None:
        if not self._initialized or self._lost is not None:
            return
        self._guard(self.experiment.set_tag, self.run_id, "status", status)
        self._guard(self.experiment.set_terminated, self.run_id, "KILLED" if status == "interrupted" else "FAILED")

    @rank_zero_only
    def finish(self, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
        if self._lost is not None:
            return
        self._guard(self._finish, cfg, run_dir, record, preds)
        self._guard(self.experiment.set_terminated, self.run_id, "FINISHED")

    def _finish(self, cfg: DictConfig, run_dir: RunDir, record: RunRecord, preds: dict[str, Any]) -> None:
        import tempfile

        client, run_id = self.experiment, self.run_id
        final = final_metrics(record)
        if final:
            super().log_metrics(final, record.epochs)
        for k, v in {"status": record.status, "device": record.device, "precision": record.precision}.items():
            client.set_tag(run_id, k, str(v))
        for f in (run_dir.config, run_dir.metrics):
            client.log_artifact(run_id, str(f))
        with tempfile.TemporaryDirectory() as tmp:
            from digits.report import draw_run  # the figures `digits.report` draws, not into the run dir

            for fig_file in draw_run(run_dir.path, Path(tmp)):
                client.log_artifact(run_id, str(fig_file), "figures")
            if self.log_onnx:
                client.log_artifact(run_id, str(_onnx(run_dir, Path(tmp))))
        if self.log_checkpoint and record.tested_checkpoint:
            client.log_artifact(run_id, str(run_dir.path / record.tested_checkpoint), "checkpoints")


def _swept() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _onnx(run_dir: RunDir, out: Path) -> Path:
    from digits import export
    from digits.evaluate import net_from_checkpoint, tested_checkpoint

    export._check_extra()
    net, cfg = net_from_checkpoint(tested_checkpoint(run_dir.path))
    images = export.validation_images(cfg, run_dir.read_fingerprint())
    path = out / "model.onnx"
    export.export_onnx(export.Deployable(net), path, images)
    return path
