"""The train/val split: stratified, seeded, the same whatever else changes."""

from __future__ import annotations

import numpy as np

from digits.data import stratified_split


def test_split_is_stratified_disjoint_and_complete() -> None:
    labels = np.repeat(np.arange(10), [100, 90, 80, 70, 60, 50, 40, 30, 20, 10])
    tr, va = stratified_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert np.bincount(labels[va], minlength=10).tolist() == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = np.arange(1000) % 10
    a = stratified_split(labels, 0.2, seed=0)[1]
    b = stratified_split(labels, 0.2, seed=0)[1]
    c = stratified_split(labels, 0.2, seed=1)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
