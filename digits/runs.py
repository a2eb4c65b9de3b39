"""The run dir: where everything of one run lives, who owns it, and the one schema of its metrics.json.

`RunDir` knows every path inside a run dir and claims a dir for one process (an exclusive marker, so two runs started
at once never share one). `RunRecord` is the only shape metrics.json takes, for a finished, an interrupted or a
failed run, written atomically. No other module spells a run-dir path or writes metrics.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from digits.errors import UserError

KINDS = ("run", "sweep", "ensemble")  # what a dir written by digits holds; see RunDir.kind
KIND_FILE = ".digits-dir"
CLAIM_FILE = ".digits-claim"
RESULT_STATUSES = ("completed", "early_stopped", "diverged")  # the job produced a result
FINISHED = (*RESULT_STATUSES, "pruned")  # a sweep re-run skips these; a pruned trial is no result: never ranked first,
# never an ensemble member


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so a reader (or a kill) never sees half a file. Non-finite floats become null: a bare
    NaN is not JSON. A failure leaves no temporary file behind."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def os_errors(path: Path, doing: str = "cannot use it"):
    """The file system's refusals (a name too long, a marker that is a directory, a read-only or full disk) as
    one line naming the path, not a traceback: every file-system step of the run-dir owner runs inside this."""
    try:
        yield
    except OSError as e:
        named = [f for f in (e.filename2, e.filename) if isinstance(f, (str, Path))]  # a rename's target first
        where = named[0] if named else path
        raise UserError(f"{doing} ({e.strerror or type(e).__name__})", where) from None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_submission(path: Path, labels: Any) -> None:
    """Kaggle's format: ImageId (from 1), Label; written then renamed, so no half file is ever uploaded."""
    import numpy as np
    import pandas as pd

    labels = np.asarray(labels).astype(int)
    frame = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels})
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_new_file(path: Path, write: Any) -> None:
    """Write a file that must not exist yet: `write(tmp)` fills a temporary file beside it, which is then linked
    into place, so an existing file (the user's, or one written meanwhile by another process) is never replaced and
    no reader sees half a file. Refused in one line when `path` exists."""
    path = Path(path)
    if path.exists():
        raise UserError("already exists; choose another name (digits never replaces a file)", path)
    if not path.parent.is_dir():
        raise UserError("no such folder", path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.link(tmp, path)
    except FileExistsError:
        raise UserError("already exists; choose another name (digits never replaces a file)", path) from None
    except OSError as e:
        raise UserError(f"cannot write ({e.strerror or e})", path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def free_name(path: Path) -> Path:
    """path, or path_1, path_2, ... before its suffix: the first name that is free (for default output names)."""
    path, n = Path(path), 0
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


# --- metrics.json -------------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """What a run achieved. `status`: completed, early_stopped, diverged, interrupted or failed."""

    status: str
    epochs: int = 0
    best_epoch: int | None = None
    val_acc_best: float | None = None
    val_acc_average: float | None = None  # final_weights=average: the averaged weights' validation accuracy
    test_acc: float | None = None
    test_loss: float | None = None
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    val_acc: list[float | None] = field(default_factory=list)  # per epoch; null where no validation ran
    val_loss: list[float | None] = field(default_factory=list)  # per epoch, as the loggers received them
    train_loss: list[float | None] = field(default_factory=list)
    train_acc: list[float | None] = field(default_factory=list)
    model: str | None = None
    optim: str | None = None
    lr: float | None = None
    seed: int | None = None
    init: str | None = None
    overrides: list[str] = field(default_factory=list)
    train_loss_last: float | None = None
    val_loss_last: float | None = None
    data: dict[str, Any] | None = None
    device: str | None = None
    precision: str | None = None
    # CPU threads of the run's matrix products: another count sums in another order, so "the same seed on the same
    # machine gives the same numbers" holds for the same count (a parallel sweep gives each job cores / n_jobs).
    threads: int | None = None
    cuda_visible_devices: str | None = None  # the GPUs the process was given (hydra/launcher=gpus sets one a job)
    best_checkpoint: str | None = None
    tested_weights: str | None = None
    tested_checkpoint: str | None = None  # the file holding the tested weights, relative to the run dir
    submission: str | None = None
    signal: str | None = None
    resume: str | None = None
    error: str | None = None

    @classmethod
    def from_progress(cls, status: str, identity: dict[str, Any], history: dict[str, list[float]]) -> RunRecord:
        """A record of the epochs done so far (RunRecorder.history()); finished runs then add their test results."""
        val_acc, seconds = history["val_acc"], history["epoch_seconds"]
        accs = [a for a in val_acc if a == a]  # NaN: an epoch without validation
        best = max(accs) if accs else None
        series = {
            k: [a if a == a else None for a in history.get(k, [])] for k in ("val_loss", "train_loss", "train_acc")
        }
        return cls(
            status=status,
            epochs=len(seconds),
            best_epoch=val_acc.index(best) + 1 if best is not None else None,
            val_acc_best=best,
            train_seconds=round(float(sum(seconds)), 3),
            epoch_seconds=[round(s, 4) for s in seconds],
            val_acc=[a if a == a else None for a in val_acc],
            **series,
            **identity,
        )

    @classmethod
    def interrupted(
        cls, identity: dict[str, Any], history: dict[str, list[float]], signal: str, run_dir: Path
    ) -> RunRecord:
        record = cls.from_progress("interrupted", identity, history)
        record.signal, record.resume = signal, resume_command(run_dir)
        return record

    @classmethod
    def failed(cls, error: BaseException, overrides: list[str]) -> RunRecord:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return cls(status="failed", error=f"{type(error).__name__}: {first}", overrides=overrides)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary_line(self) -> str:
        """The run's last line: `completed after 40 epochs: val 99.63% (best, epoch 40), test 99.66% ...`."""
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        validated = (self.data or {}).get("n_val") != 0  # data.val_fraction=0 trains on every row
        val = f"val {_percent(self.val_acc_best)} (best, epoch {self.best_epoch})" if validated else "no validation"
        if self.val_acc_average is not None:
            best = f"best epoch {self.best_epoch}: {_percent(self.val_acc_best)}"
            val = f"val {_percent(self.val_acc_average)} (averaged; {best})"
        test = f"test {_percent(self.test_acc)} with the {self.tested_weights} weights"
        return f"{self.status} after {epochs}: {val}, {test}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def resume_command(run_dir: Path) -> str:
    import shlex

    return f"python -m digits.train resume={shlex.quote(str(run_dir))}"


# --- the run dir --------------------------------------------------------------------------------------------------
class RunDir:
    """One run's directory: its paths, its claim by one process, and its record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # paths
    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.npz"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def average_checkpoint(self) -> Path:
        return self.checkpoints / "average.ckpt"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def overrides_file(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def submission(self) -> Path:
        return self.path / "submission.csv"

    @property
    def claim_file(self) -> Path:
        return self.path / CLAIM_FILE

    @property
    def kind_file(self) -> Path:
        return self.path / KIND_FILE

    @property
    def sweep_file(self) -> Path:
        return self.path / "sweep.json"

    CSV_DIR = "csv"  # logger=csv writes csv/metrics.csv and csv/hparams.yaml

    @property
    def mlflow_file(self) -> Path:
        """logger=mlflow: the tracking URI and MLflow run id of this run dir, so a resume continues that run."""
        return self.path / "mlflow.json"

    @property
    def fingerprint_file(self) -> Path:
        return self.path / "fingerprint.json"

    def kind(self) -> str | None:
        """What this dir holds: 'run', 'sweep' or 'ensemble' (written by digits), None (absent or empty), or
        'foreign' (files that no digits command wrote). Dirs written before the marker existed are told by their
        contents."""
        if not self.path.is_dir():
            return None
        try:
            marker = json.loads(self.kind_file.read_text())
        except (OSError, ValueError):
            marker = None
        if isinstance(marker, dict) and marker.get("kind") in KINDS:
            return str(marker["kind"])
        if (self.path / "multirun.yaml").is_file():
            return "sweep"
        if self.overrides_file.is_file():
            return "run"
        if (self.path / "ensemble.json").is_file():
            return "ensemble"
        if any(p.name not in (CLAIM_FILE, KIND_FILE) for p in self.path.iterdir()):
            return "foreign"
        return None

    def check_writable_as(self, kind: str) -> None:
        """The one rule for where a command writes: into a dir it creates, an empty one, or its own earlier output
        of the same kind (a resume, a sweep re-run). Anything else is refused before a byte is written."""
        with os_errors(self.path, f"cannot use it as {_a(kind)} dir"):
            self._check_writable_as(kind)

    def _check_writable_as(self, kind: str) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"is a file; {_a(kind)} takes a directory", self.path)
        here = self.kind()
        if here is None or here == kind:
            return
        if here == "foreign":
            names = sorted(p.name for p in self.path.iterdir() if p.name not in (CLAIM_FILE, KIND_FILE))
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise UserError(
                f"holds files that digits did not write ({shown}); {_a(kind)} writes only into a new or empty dir",
                self.path,
            )
        raise UserError(f"holds {_a(here)}, not {_a(kind)}; choose another dir", self.path)

    # contents
    def holds_results(self) -> bool:
        return self.metrics.is_file() or self.checkpoints.is_dir()

    def is_run(self) -> bool:
        return self.metrics.is_file() or self.overrides_file.is_file()

    def read_record(self) -> dict[str, Any] | None:
        if not self.metrics.is_file():
            return None
        try:
            data = json.loads(self.metrics.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, record: RunRecord) -> None:
        write_json_atomic(self.metrics, record.to_json())

    def read_fingerprint(self) -> dict[str, Any] | None:
        """What the run was when it started (digits.fingerprint); None for a run from before fingerprints."""
        if not self.fingerprint_file.is_file():
            return None
        try:
            data = json.loads(self.fingerprint_file.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise UserError("is damaged; the run cannot be checked for a resume", self.fingerprint_file)
        return data

    def write_fingerprint(self, fp: dict[str, Any]) -> None:
        write_json_atomic(self.fingerprint_file, fp)

    def write_predictions(self, preds: dict[str, Any]) -> None:
        """predictions.npz, and submission.csv when the test split is unlabelled (Kaggle's)."""
        import numpy as np

        np.savez_compressed(self.predictions, **preds)
        if "test_probs" in preds and "test_labels" not in preds:
            write_submission(self.submission, preds["test_probs"].argmax(1))

    def write_compact_softmax(self, out: Path) -> None:
        """The run's softmax outputs in the form results/ commits (float16, compressed: ~100 kB for MNIST's 10,000
        test images), so an ensemble of committed runs can be recomputed from the repository alone."""
        import numpy as np

        preds = self.read_predictions()
        kept = {k: v.astype(np.float16) for k, v in preds.items() if k.endswith("_probs")}
        kept.update({k: v.astype(np.int8) for k, v in preds.items() if k.endswith("_labels")})
        if "test_fingerprint" in preds:
            kept["test_fingerprint"] = preds["test_fingerprint"]
        np.savez_compressed(out, **kept)

    def overrides(self, everything: bool = False) -> list[str]:
        """The job's own command-line overrides (Hydra's .hydra/overrides.yaml), without hydra.* ones unless
        `everything`; a damaged file is a one-line UserError."""
        if not self.overrides_file.is_file():
            return []
        try:
            items = yaml.safe_load(self.overrides_file.read_text()) or []
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            items = None
        if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
            raise UserError("is damaged (not the list of overrides Hydra writes)", self.overrides_file)
        return items if everything else [o for o in items if not o.lstrip("+~").startswith(("hydra", "resume="))]

    def read_predictions(self) -> dict[str, Any]:
        """Every array in predictions.npz, loaded; a damaged or foreign file is a one-line UserError."""
        import zipfile

        import numpy as np

        try:
            with np.load(self.predictions, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise UserError("has no predictions.npz (the run did not finish)", self.path) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"is not a readable predictions file ({_plain(e)})", self.predictions) from None

    # ownership
    def claim(self, kind: str = "run") -> None:
        """Make this process the dir's only user: create it (and missing parents) and an exclusive marker, after
        check_writable_as(kind); the dir is then marked as a `kind` for good.

        A marker left by a process that is gone (same host, pid not running) is taken over: that run was killed.
        A file-system error on the way is one line, and what this call made is removed.
        """
        self.check_writable_as(kind)
        made: list[Path] = []
        try:
            with os_errors(self.path, f"cannot claim it as {_a(kind)} dir"):
                self._claim(kind, made)
        except UserError:
            if self.owned():
                self.claim_file.unlink(missing_ok=True)
            for d in reversed(made):  # deepest first; only what this call created, and only if empty
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise

    def _claim(self, kind: str, made: list[Path]) -> None:
        created = _make_dirs(self.path.absolute(), made)
        existing = sorted(p.name for p in self.path.iterdir())
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "created": [str(p) for p in created]}
        mine["existing"] = existing
        mine["since"] = dt.datetime.now().isoformat(timespec="seconds")
        for _ in range(2):
            if _create_exclusive(self.claim_file, json.dumps(mine)):
                try:
                    self.check_writable_as(kind)  # again, now that no other process can write here
                except UserError:
                    self.release()
                    raise
                if not self.kind_file.is_file():
                    write_json_atomic(self.kind_file, {"kind": kind})
                return
            other = self._read_claim()
            if other is None and self.claim_file.exists():
                raise UserError(
                    f"has a run marker {self.claim_file.name} that cannot be read; if no run uses this dir, "
                    "delete the marker and start again",
                    self.path,
                )
            if other and _alive(other):
                raise UserError(
                    f"is in use by another run (pid {other.get('pid')} on {other.get('host')}); "
                    "choose another dir or wait for it to finish",
                    self.path,
                )
            self.claim_file.unlink(missing_ok=True)  # a stale marker: its process is gone
        raise UserError("could not claim the run dir (its marker keeps reappearing)", self.path)

    def owned(self) -> bool:
        claim = self._read_claim()
        return bool(claim) and claim.get("pid") == os.getpid() and claim.get("host") == socket.gethostname()

    def release(self) -> None:
        if self.owned():
            self.claim_file.unlink(missing_ok=True)

    def discard(self) -> None:
        """Undo what this process made for a run that produced nothing: the dirs it created, or else only the
        entries that appeared since it claimed the dir. A user's own files are never touched."""
        claim = self._read_claim()
        if not claim or not self.owned() or self.holds_results():
            self.release()
            return
        created = [Path(p) for p in claim.get("created", [])]
        if self.path.absolute() in created:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in reversed(created):  # deepest first
                if parent != self.path.absolute():
                    with contextlib.suppress(OSError):
                        parent.rmdir()  # only if empty: another run may live there by now
            return
        keep = set(claim.get("existing", []))
        for entry in self.path.iterdir():
            if entry.name not in keep:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _read_claim(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.claim_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _create_exclusive(path: Path, text: str) -> bool:
    """Create `path` holding `text` only if it does not exist; False if it does. The file appears whole (written
    aside, then hard-linked into place), so a second process never reads an empty marker and takes it for a dead
    one's. Filesystems without hard links fall back to O_EXCL, where a reader may see the file before its text."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _make_dirs(path: Path, created: list[Path] | None = None) -> list[Path]:
    """mkdir -p, returning the dirs this call created, deepest last (also appended to `created` as they appear,
    so a caller that fails half-way knows what to remove)."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created = [] if created is None else created
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:
            pass  # another process made it in between: not ours
    return created


def _alive(claim: dict[str, Any]) -> bool:
    """Whether the claiming process still runs. On another host we cannot tell, so assume it does."""
    if claim.get("host") != socket.gethostname():
        return True
    pid = claim.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unique_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name_1, name_2, ... : the first that does not exist yet (claimed by the caller)."""
    candidate, n = parent / name, 0
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}_{n}"
    return candidate


def _plain(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]


# --- reading many runs --------------------------------------------------------------------------------------------
def tested_val_acc(record: dict[str, Any]) -> float | None:
    """The validation accuracy of the weights that were tested: the last epoch's for final_weights=last, the
    averaged weights' for average, the best epoch's otherwise. Ranking runs by `val_acc_best` instead would favour
    a lucky epoch whose weights were never tested."""
    tested = record.get("tested_weights")
    if tested == "average":
        return record.get("val_acc_average")
    if tested == "last":
        accs = [a for a in record.get("val_acc") or [] if a is not None]
        return accs[-1] if accs else None
    return record.get("val_acc_best")


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    return RunDir(run_dir).read_record()


def read_overrides(run_dir: str | Path) -> list[str]:
    return RunDir(run_dir).overrides()


def read_predictions(run_dir: str | Path) -> dict[str, Any]:
    return RunDir(run_dir).read_predictions()


def holds_results(run_dir: str | Path) -> bool:
    return RunDir(run_dir).holds_results()


def _job_order(d: Path) -> tuple[int, int, str]:
    head = d.name.split("_", 1)[0]
    return (0, int(head), d.name) if head.isdigit() else (1, 0, d.name)


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Sub-directories of a sweep that are jobs (`<n>_<what it varied>`, with .hydra/ or metrics.json), in job
    order."""
    sweep_dir = Path(sweep_dir)
    jobs = [d for d in sweep_dir.iterdir() if d.is_dir() and RunDir(d).is_run()]
    return sorted(jobs, key=_job_order)


def labels(run_dirs: list[Path]) -> dict[Path, str]:
    """Each job's name in legends and tables: the overrides that differ between the jobs (what the sweep varied).

    Shared overrides (data.dir=..., trainer.max_epochs=...) would only make every name long and alike. A single run
    is named by all its overrides; a job with none by its directory name.
    """
    parsed = {d: dict(o.split("=", 1) if "=" in o else (o, "") for o in read_overrides(d)) for d in run_dirs}
    keys = {k for kv in parsed.values() for k in kv}
    if len(run_dirs) > 1:
        keys = {k for k in keys if len({kv.get(k) for kv in parsed.values()}) > 1}
    out = {}
    for d, kv in parsed.items():
        name = ",".join(f"{k}={v}" for k, v in sorted(kv.items()) if k in keys)
        out[d] = name or Path(d).name
    return out
