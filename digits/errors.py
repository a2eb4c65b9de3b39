"""User-facing errors.

A mistake the user can fix (a bad CSV, a bad override, a missing file) must end in one line that says where and what,
never a traceback: tracebacks are for our bugs, not for theirs.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix; rendered as `<file>[:<row>[:<column>]]: <what>`."""

    def __init__(
        self, what: str, file: str | Path | None = None, row: int | None = None, column: str | int | None = None
    ):
        self.what = what
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.row is not None:
                where += f":{self.row}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        return where + self.what


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived during training: the run is recorded as interrupted and the process exits
    128 + signal, the shell's convention, so scripts and schedulers see why it stopped."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"signal {self.signum}")


def report(err: UserError) -> None:
    """Print the one-line form the CLI promises; newlines inside are folded so it stays one line."""
    line = " ".join(str(err).split("\n"))
    print(f"digits: error: {line}", file=sys.stderr, flush=True)


def cli(fn: F) -> F:
    """Decorate an entry point so a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            report(err)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's error form: a bad flag is one line and exit status 2, not usage plus a message."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        report(UserError(f"{message} (see {self.prog} --help)"))
        sys.exit(EXIT_USER_ERROR)


def positive_int(text: str) -> int:
    """argparse type: a count of at least 1 (a zero or negative count would silently do nothing or fail later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def without_password(url: str) -> str:
    """A URL (a study's storage, a tracking server) with its password starred, for messages and files."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
