"""The train/val split: stratified, seeded, the same whatever else changes."""

from __future__ import annotations

import numpy as np
import torch

from digits.data import DigitsDataModule, stratified_split


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


def test_split_seed_fixes_the_validation_rows_while_seed_moves_the_rest(grid_dir) -> None:
    def setup(**kw) -> DigitsDataModule:
        dm = DigitsDataModule(dir=str(grid_dir), on_device=False, **kw)
        dm.prepare_data()
        dm.setup()
        return dm

    base, shared, own = setup(seed=0), setup(seed=3, split_seed=0), setup(seed=3)
    assert torch.equal(shared.val.images, base.val.images) and torch.equal(shared.val.labels, base.val.labels)
    assert not torch.equal(own.val.images, base.val.images)
    # The order of the training rows still follows data.seed: runs that share a split still differ in what they see.
    assert not torch.equal(next(iter(shared.train_dataloader()))[0], next(iter(base.train_dataloader()))[0])
