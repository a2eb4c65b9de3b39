"""Reading and writing what a run leaves in its directory: metrics.json, predictions, overrides."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

METRICS = "metrics.json"
PREDICTIONS = "predictions.npz"
FINISHED = ("completed", "early_stopped", "diverged")  # a sweep re-run skips these
RESULT_STATUSES = FINISHED  # statuses that count as "the job produced a result"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so a reader (or a kill) never sees half a file."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_submission(path: Path, labels: Any) -> None:
    """Kaggle's format: ImageId (from 1), Label; written then renamed, so no half file is ever uploaded."""
    import numpy as np
    import pandas as pd

    labels = np.asarray(labels).astype(int)
    frame = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels})
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def read_predictions(run_dir: Path) -> dict[str, Any]:
    """Every array in a run's predictions.npz, loaded (the file is closed on return)."""
    import numpy as np

    with np.load(Path(run_dir) / PREDICTIONS) as z:
        return {k: z[k] for k in z.files}


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    p = Path(run_dir) / METRICS
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def read_overrides(run_dir: Path) -> list[str]:
    """The job's own command-line overrides (Hydra's .hydra/overrides.yaml), without hydra.* ones."""
    p = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not p.is_file():
        return []
    items = yaml.safe_load(p.read_text()) or []
    return [o for o in items if not o.lstrip("+~").startswith(("hydra", "resume="))]


def holds_results(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / METRICS).is_file() or (run_dir / "checkpoints").is_dir()


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Sub-directories of a sweep that are jobs (they have Hydra's .hydra/ or a metrics.json), in job order."""
    sweep_dir = Path(sweep_dir)
    jobs = [d for d in sweep_dir.iterdir() if d.is_dir() and ((d / ".hydra").is_dir() or (d / METRICS).is_file())]
    return sorted(jobs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


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
        name = " ".join(f"{k}={v}" for k, v in kv.items() if k in keys)
        out[d] = name or Path(d).name
    return out
