"""The tests' commands run in children of a fork server (tests/helpers/forkserver.py); each must be what
`python -m MODULE ARGS` in a new interpreter is, apart from its start-up time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import torch
from helpers import FAST, cli_env
from helpers.forkclient import run_forked, run_fresh


def _both(module: str, args: list[str], cwd: Path, env: dict[str, str]) -> tuple[list, subprocess.CompletedProcess]:
    forked = [run_forked(module, args, cwd=cwd, env=env, timeout=300) for _ in range(2)]
    return forked, run_fresh(module, args, cwd=cwd, env=env, timeout=300)


def test_a_forked_command_starts_ends_and_exits_as_a_new_interpreter(tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "PYTHONWARNINGS": "ignore", "PROBE": "set for this command"}
    forked, fresh = _both("forkprobe", ["a b", "--flag"], tmp_path, env)
    facts = [json.loads(p.stdout) for p in (*forked, fresh)]
    for p in (*forked, fresh):  # a thread still running at exit is waited for, then atexit runs, then the status
        assert (p.returncode, p.stderr) == (3, "to stderr\nthread done\natexit ran\n")
    same = ["argv", "cwd", "path0", "env", "name", "spec", "main"]
    assert all({k: f[k] for k in same} == {k: facts[-1][k] for k in same} for f in facts)
    assert facts[0]["argv"][1:] == ["a b", "--flag"] and facts[0]["cwd"] == str(tmp_path) and facts[0]["env"]
    assert len({f["pid"] for f in facts} | {os.getpid()}) == 4
    assert facts[0]["random"] != facts[1]["random"] and facts[0]["np_random"] != facts[1]["np_random"]

    forked, fresh = _both("forkprobe", ["raise"], tmp_path, env)
    for p in (*forked, fresh):
        assert p.returncode == 1 and p.stderr.splitlines()[-1] == "ValueError: an uncaught error"
    forked, fresh = _both("forkprobe", ["interrupt"], tmp_path, env)
    for p in (*forked, fresh):  # an uncaught KeyboardInterrupt ends the interpreter by SIGINT
        assert p.returncode == -signal.SIGINT and p.stderr.splitlines()[-1] == "KeyboardInterrupt"


def test_a_forked_run_gives_a_new_interpreters_numbers_and_messages(tmp_path: Path, grid_dir: Path) -> None:
    env = {**cli_env(tmp_path), "PYTHONWARNINGS": "ignore"}
    args = [f"data.dir={grid_dir}", *FAST, "model=lenet", "data.augment=true", "model.dropout=0.3", "seed=3"]
    forked = run_forked("digits.train", [*args, f"hydra.run.dir={tmp_path / 'forked'}"], tmp_path, env, 300)
    fresh = run_fresh("digits.train", [*args, f"hydra.run.dir={tmp_path / 'fresh'}"], tmp_path, env, 300)
    assert forked.returncode == fresh.returncode == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("forked", "fresh"))
    assert {k: v for k, v in a.items() if "seconds" not in k} == {k: v for k, v in b.items() if "seconds" not in k}
    wa, wb = (
        torch.load(tmp_path / d / "checkpoints/last.ckpt", weights_only=True)["state_dict"] for d in ("forked", "fresh")
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    bad = ["lr=-1"]
    forked, fresh = _both("digits.train", bad, tmp_path, env)
    assert {(p.returncode, p.stdout, p.stderr) for p in (*forked, fresh)} == {
        (2, "", "digits: error: lr=-1.0: must be > 0 (the learning rate)\n")
    }
