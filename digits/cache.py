"""The one place on a machine where digits keeps what it can make again: the embedded MNIST and parse caches.

A data set fetched per working directory would be fetched again by every run started elsewhere (175 MB written
each time), so the embedded MNIST lives in the user's cache dir, as other tools keep their downloads:
$DIGITS_DATA if set, else $XDG_CACHE_HOME/digits, else ~/.cache/digits.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/digits, else ~/.cache/digits (the XDG base-directory convention)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digits"


def data_home() -> str:
    """Where the embedded MNIST goes (under mnist/): $DIGITS_DATA when set, else the user's cache dir."""
    return os.environ.get("DIGITS_DATA") or str(user_cache_dir())


def mnist_root() -> str:
    """The embedded MNIST's folder when a config names none."""
    return str(Path(data_home()) / "mnist")


def portable(path: str | Path) -> str:
    """A data folder as a run's record names it, without this machine's home or cache: the embedded MNIST's
    default place as `$DIGITS_DATA/mnist` or `~/.cache/digits/mnist` (what the docs call it), a folder below the
    working directory relative to it, anything else as it is (the user's own path, which only they know)."""
    path = Path(path).absolute()
    if os.environ.get("DIGITS_DATA") and path == Path(os.environ["DIGITS_DATA"]).absolute() / "mnist":
        return "$DIGITS_DATA/mnist"
    home = Path.home()
    if path.is_relative_to(home) and path.is_relative_to(user_cache_dir()):
        return "~/" + str(path.relative_to(home))
    if path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return str(path)
