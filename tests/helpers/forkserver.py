"""Runs `python -m MODULE ARGS` for the tests without paying the interpreter's imports each time.

Most of a CLI test's time was start-up: `import lightning` alone takes 4 s on a fast CPU and 8.5 s on a slow one,
and the suite starts ~80 commands. This server imports the project's libraries once and, for each command, forks
a child that runs the module exactly as `python -m` does (runpy's `_run_module_as_main`, the same argv, cwd and
environment), with its own pid, stdout, stderr and exit status. Each child is forked from the server as it stood
after its imports, never from an earlier child, so no state passes between commands. What a fresh interpreter
would have printed while importing is captured once and prepended to every child's output, so a test that asks
for a one-line error still sees it. The entry-point modules themselves are not imported here: they run as
`__main__` in the child, as they do for a user.

Protocol (one server per pytest worker): JSON lines on stdin (a request) and on stdout (`{"pid"}` at fork, then
`{"rc"}` when the child ends). `DIGITS_TESTS_FRESH=1` bypasses the server (tests/helpers.run_cli).
"""

from __future__ import annotations

import atexit
import json
import os
import random
import sys
import tempfile

# The project's libraries and what they import; no entry point (train, predict, report, ...) is in this list.
PRELOAD = [
    "numpy",
    "pandas",
    "torch",
    "lightning",
    "lightning.pytorch",
    "torchmetrics",
    "hydra",
    "omegaconf",
    "tensorboard",
    "digits.cli_args",
    "digits.schema",
    "digits.runs",
    "digits.errors",
    "digits.pipeline",
    "digits.module",
    "digits.callbacks",
    "digits.loggers",
    "digits.evaluate",
    "digits.data.datamodule",
    "digits.models",
]


def _preload() -> tuple[str, str]:
    """Imports PRELOAD with fd 1 and 2 sent to files, and returns what the imports printed."""
    import importlib

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = [os.dup(1), os.dup(2)]
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            for name in PRELOAD:
                importlib.import_module(name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        printed = []
        for f in (out, err):
            f.seek(0)
            printed.append(f.read().decode("utf-8", "replace"))
    return printed[0], printed[1]


def _child(request: dict, proto: list[int]) -> None:
    """In the forked child: become `python -m MODULE ARGS` in the request's cwd and environment; never returns."""
    code, interrupted = 1, False
    try:
        for fd in proto:
            os.close(fd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = os.getcwd()  # what `python -m` puts first
        random.seed()  # a fresh interpreter seeds these from the OS; forked children would all share one state
        import numpy as np

        np.random.seed()  # noqa: NPY002  (numpy's global state, the one a new interpreter seeds)
        sys.argv = ["-m", *request["argv"]]
        import runpy

        try:
            runpy._run_module_as_main(request["module"], alter_argv=True)  # what `python -m` calls
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException as e:
            sys.excepthook(*sys.exc_info())
            interrupted = isinstance(e, KeyboardInterrupt)  # the interpreter then ends by SIGINT, not a status
        # What the interpreter does on its way out, in its order: join non-daemon threads (running what they
        # registered with threading), then the atexit functions.
        import threading

        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:  # a failure of this helper itself: say so on the child's stderr
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            if interrupted:
                import signal

                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            os._exit(code & 0xFF)


def serve() -> None:
    # The protocol gets its own fds; fd 0 and 1 stop being the pipes, so nothing printed can corrupt a message.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    printed_out, printed_err = _preload()
    reader = os.fdopen(proto_in, "r", encoding="utf-8")

    def send(message: dict) -> None:
        os.write(proto_out, (json.dumps(message) + "\n").encode())

    send({"ready": True, "stdout": printed_out, "stderr": printed_err})
    for line in reader:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, [proto_in, proto_out])
        send({"pid": pid})
        _, status = os.waitpid(pid, 0)
        send({"rc": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
