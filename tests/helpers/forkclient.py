"""The test side of tests/helpers/forkserver.py: one server per test process, started on first use."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class _Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.forkserver"],  # found, as the project is, on env's PYTHONPATH
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self.buf = b""
        hello = self.read(timeout=300)
        self.printed_out, self.printed_err = hello["stdout"], hello["stderr"]

    def read(self, timeout: float) -> dict:
        """The next message; TimeoutError when none comes in time, RuntimeError when the server has ended."""
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if not select.select([fd], [], [], max(0.0, end - time.monotonic()))[0]:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the test fork server ended (exit {self.proc.wait()})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, message: dict) -> None:
        self.proc.stdin.write((json.dumps(message) + "\n").encode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_servers: dict[tuple, _Server] = {}


def _startup_env(env: dict[str, str]) -> tuple:
    """What an interpreter reads from its environment while starting and importing: a request that differs in any
    of it gets a server of its own, started with that environment."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(("PYTHON", "OMP_", "MKL_", "TORCH", "CUDA"))))


def _get(env: dict[str, str]) -> _Server:
    key = _startup_env(env)
    server = _servers.get(key)
    if server is None or server.proc.poll() is not None:
        server = _servers[key] = _Server(env)
        atexit.register(server.stop)
    return server


def run_forked(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """Like subprocess.run([python, -m, module, *args], capture_output=True, text=True, timeout=timeout)."""
    server = _get(env)
    cmd = [sys.executable, "-m", module, *args]
    with tempfile.TemporaryDirectory(prefix="forked-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        server.send(
            {"module": module, "argv": list(args), "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
        )
        pid = server.read(timeout=60)["pid"]
        try:
            rc = server.read(timeout=timeout)["rc"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            server.read(timeout=60)
            raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text()) from None
        return subprocess.CompletedProcess(
            cmd, rc, server.printed_out + out.read_text(), server.printed_err + err.read_text()
        )


def run_fresh(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """The same command in a new interpreter: what run_forked stands in for."""
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
