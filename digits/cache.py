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
