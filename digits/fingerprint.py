"""What makes two runs the same run: one fingerprint for resumes, sweep jobs and checkpoints.

A run's trajectory (the weights it ends with) is decided by its resolved config, less the keys listed in
NOT_TRAJECTORY, and by the bytes of its data files. A run stores both when it starts (fingerprint.json in its dir, and
the digest in every checkpoint it writes); a resume must match them, a sweep job is identified by its config part,
and a sweep by the ordered list of its jobs. The first difference is named in the refusal.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from digits.cache import mnist_root
from digits.errors import UserError

# Keys that cannot change the weights: where things are written, how progress is shown, how evaluation is batched,
# and where the data lies (its bytes are fingerprinted instead, so a moved folder is the same data).
NOT_TRAJECTORY = (
    "paths",
    "resume",
    "callbacks.extra",  # your own callbacks are taken as observers: a resume may add or drop one
    "logger",
    "callbacks.progress_bar",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.eval_batch_size",
    "data.dir",
    "data.root",
)


def flatten(plain: Any, prefix: str = "") -> dict[str, Any]:
    """{'optim.lr': 0.1, ...}; lists stay values, an empty or null group is one key (an empty config, none)."""
    if not prefix and plain == {}:
        return {}
    if isinstance(plain, dict) and plain:
        out: dict[str, Any] = {}
        for k, v in plain.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: plain}


# Keys the run dir owns (schema `fixed`): the same text resolves to each run's own dir.
RUN_DIR_KEYS = (".dirpath", ".save_dir")


def _kept(key: str) -> bool:
    return not any(key == n or key.startswith(n + ".") for n in NOT_TRAJECTORY) and not key.endswith(RUN_DIR_KEYS)


def trajectory(plain: dict[str, Any]) -> dict[str, Any]:
    """The resolved config's keys that decide the weights, flattened and sorted."""
    return {k: v for k, v in sorted(flatten(plain).items()) if _kept(k)}


def job_key(plain: dict[str, Any]) -> dict[str, Any]:
    """A sweep job's identity before it runs: its trajectory and where its data lies (the bytes are not read
    yet, and a sweep over data.dir varies exactly that)."""
    data = plain.get("data") or {}
    where = data.get("dir") or data.get("root")
    return {**trajectory(plain), "data.location": str(Path(where).absolute()) if where else None}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


_SHA256: dict[tuple[str, int, int, int, int], str] = {}  # one hash a file per process, for every asker


def file_sha256(path: Path) -> str:
    """The data's one identity: the fingerprint, the parse cache and every record that stands for a file's contents
    use this hash, so no two of them can disagree about whether the data changed. Hashed once per process while the
    file's inode, size and mtime stay the same."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # ctime: any write
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


def data_identity(data_dir: str | Path) -> dict[str, dict[str, str]]:
    """Each data file's absolute path and sha256, once per run start: for the embedded MNIST's two CSVs (128 MB),
    0.8 s from disk and 0.1 s from the page cache on a 2-core AMD EPYC (Zen 3)."""
    from digits.data.csv import data_files

    out = {}
    for f in data_files(data_dir):
        if f is not None:
            out[f.name] = {"path": str(f.resolve()), "sha256": file_sha256(f)}
    return out


def data_dir_of(plain: dict[str, Any]) -> Path:
    """The folder a resolved config reads: data.dir, or the embedded MNIST's root when it is null."""
    data = plain.get("data") or {}
    return Path(data.get("dir") or data.get("root") or mnist_root())


def of_run(plain: dict[str, Any], data_dir: str | Path | None) -> dict[str, Any]:
    """A run's fingerprint: its trajectory config and its data files, with a digest of both."""
    config = trajectory(plain)
    data = data_identity(data_dir) if data_dir is not None else {}
    return {"digest": digest([config, {k: v["sha256"] for k, v in data.items()}]), "config": config, "data": data}


def first_difference(was: dict[str, Any], now: dict[str, Any]) -> str | None:
    """'trainer.limit_train_batches: was null, now 20' for the first key (in order) that differs, or None."""
    for key in sorted(set(was) | set(now)):
        a, b = was.get(key, "<absent>"), now.get(key, "<absent>")
        if a != b:
            return f"{key}: was {_show(a)}, now {_show(b)}"
    return None


def data_difference(was: dict[str, Any], now: dict[str, Any]) -> str | None:
    for name in sorted(set(was) | set(now)):
        a, b = was.get(name), now.get(name)
        if a is None or b is None:
            return f"data file {name}: {'added' if a is None else 'gone'}"
        if a.get("sha256") != b.get("sha256"):
            return f"data file {name} ({b.get('path')}) has changed since the run started"
    return None


def _show(v: Any) -> str:
    return "null" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def check_same(stored: dict[str, Any], now: dict[str, Any], where: Path, what: str = "a resume") -> None:
    """Refuse, in one line naming the first difference, when `now` is not the run `stored` describes."""
    diff = first_difference(stored.get("config") or {}, now.get("config") or {})
    if diff is None and stored.get("data") and now.get("data") is not None:
        diff = data_difference(stored["data"], now["data"])
    if diff is not None:
        raise UserError(f"{what} must continue the same run, but {diff} (start a new run for other settings)", where)


# Keys a run fills in itself when its config leaves them open (the device policy, the weights a run without
# validation keeps): a checkpoint's config holds the filled value where the command had null.
FILLED = ("data.batch_size", "final_weights", "trainer.precision", "channels_last")


def check_same_config(was: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """A resume of a run that has only its checkpoint's config to go by: the same trajectory, less what the run
    filled in itself (a null there was a choice left to the run, which made the same one again)."""
    open_now = {k for k in FILLED if now.get(k) is None}  # the command leaves it to the run, as the run did
    diff = first_difference(
        {k: v for k, v in was.items() if k not in open_now}, {k: v for k, v in now.items() if k not in open_now}
    )
    if diff is not None:
        raise UserError(
            f"a resume must continue the same run, but {diff} (from its last.ckpt; start a new run for other settings)",
            where,
        )


def check_checkpoint(stored: dict[str, Any], ckpt: dict[str, Any], path: Path) -> None:
    """A checkpoint a resume would load must have been written by this run (its digest), not copied from another."""
    if ckpt.get("digits_fingerprint") in (None, stored.get("digest")):
        return
    theirs = trajectory(ckpt.get("digits_config") or {})
    diff = first_difference(
        {k: v for k, v in (stored.get("config") or {}).items() if k not in FILLED},
        {k: v for k, v in theirs.items() if k not in FILLED},
    )
    raise UserError(f"was written by another run ({diff or 'other data'}); it is not resumed", path)
