"""logger=mlflow: one MLflow run per run dir, bound to it by the run's own tags."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from digits import fingerprint
from digits.errors import UserError, without_password
from digits.loggers import epoch_step, final_metrics
from digits.runs import RunDir, RunRecord, write_json_atomic
from digits.schema import plain_config

log = logging.getLogger("digits.train")


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


# The tracking URIs MLflow can log to: a database (SQLAlchemy's dialects, with or without a driver: postgresql+psycopg),
# a tracking server, or a folder (a plain path or file:///).
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
SCHEMES = (*DATABASES, "http", "https", "file", "")
MAX_EXPERIMENT_NAME = 500  # MLflow's own limit, which it enforces only when the experiment is created


def check_server(uri: str, timeout: float = 5.0) -> None:
    """A tracking URI is checked before anything is written: its scheme must be one MLflow logs to (a typo is not
    left to MLflow's model-registry error); an http(s) one must answer MLflow's health check now, not after an hour
    of training; a database server must accept a connection (MLflow itself retries for minutes); a SQLite one must
    name a database or a new file, checked before its lock file is written beside it."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in SCHEMES:
        raise UserError(
            f"logger.mlflow.tracking_uri={without_password(uri)}: not a tracking URI MLflow knows; expected "
            "sqlite:///FILE, http(s)://HOST:PORT, postgresql://, mysql:// or mssql://USER@HOST/DB, or a folder"
        )
    if scheme in DATABASES and scheme != "sqlite":
        _check_database(uri, timeout)
    db = _sqlite_file(uri)
    if db is not None and db.exists():
        try:
            with open(db, "rb") as f:
                header = f.read(16)
        except OSError as e:
            raise UserError(f"logger.mlflow.tracking_uri={uri}: cannot read it ({e.strerror})", db) from None
        if header and header != b"SQLite format 3\x00":
            raise UserError(f"logger.mlflow.tracking_uri={uri}: not a SQLite database, so not an MLflow store", db)
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


def _check_database(uri: str, timeout: float) -> None:
    import sqlalchemy

    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": max(1, int(timeout))})
        with engine.connect():
            pass
    except Exception as e:  # a driver missing, a server down, a wrong password
        cause = getattr(e, "orig", None) or e
        why = " ".join(f"{type(cause).__name__}: {cause}".split())[:300].replace(uri, without_password(uri))
        raise UserError(f"logger.mlflow.tracking_uri={without_password(uri)}: cannot connect ({why})") from None
    finally:
        if engine is not None:
            engine.dispose()


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
        for noisy in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..." on stderr
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if len(experiment_name) > MAX_EXPERIMENT_NAME:
            raise UserError(
                f"logger.mlflow.experiment_name: at most {MAX_EXPERIMENT_NAME} characters (MLflow's limit), "
                f"got {len(experiment_name)}"
            )
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
            where = f"logger.mlflow (tracking_uri={without_password(uri)}, experiment_name={self._experiment_name})"
            raise UserError(f"{where}: {' '.join(str(e).split())[:300]}") from None
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
            from digits.plots import draw_run  # the figures `digits.report` draws, not into the run dir

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
