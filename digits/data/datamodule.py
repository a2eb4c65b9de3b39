"""The DataModule: a data folder (or the embedded MNIST default) to device-resident train/val/test tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from digits.cache import mnist_root, portable
from digits.data.augment import Augment
from digits.data.batches import TensorBatches
from digits.data.csv import DigitArrays, check_folder, data_files, load_csv
from digits.data.mnist import ensure_mnist
from digits.errors import UserError


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices; each class gives round(n_class * val_fraction) to val.

    Depends only on the labels, the fraction and the seed, so every model and optimizer in a sweep sees one split.
    """
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val.append(rng.permutation(idx)[: round(len(idx) * val_fraction)])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 1, 28, 28]
    labels: torch.Tensor | None  # int64 [N]

    def __len__(self) -> int:
        return len(self.images)


class DigitsDataModule(L.LightningDataModule):
    """`dir` holds train.csv (labelled) and optionally test.csv (labelled or not); None means embedded MNIST."""

    def __init__(
        self,
        dir: str | None = None,
        root: str | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        seed: int = 0,
        split_seed: int | None = None,
        augment: bool = False,
        rotate: float = 12.0,
        translate: float = 2.0,
        zoom: float = 0.0,
        elastic: float = 0.0,
        elastic_sigma: float = 6.0,
        on_device: bool = True,
    ):
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise UserError(f"data.val_fraction must be at least 0 and below 1, got {val_fraction}")
        if batch_size < 1 or eval_batch_size < 1:
            raise UserError("data.batch_size and data.eval_batch_size must be positive")
        self.dir = dir
        self.root = root or mnist_root()
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.split_seed = seed if split_seed is None else split_seed
        self.augment = (
            Augment(rotate=rotate, translate=translate, zoom=zoom, elastic=elastic, elastic_sigma=elastic_sigma)
            if augment
            else None
        )
        self.on_device = on_device
        self.train: Split | None = None
        self.val: Split | None = None
        self.test: Split | None = None

    @classmethod
    def of_run(cls, cfg: dict, fingerprint: dict | None = None) -> DigitsDataModule:
        """A trained run's own splits, set up on the CPU, from the config its checkpoint stores: the same folder,
        fraction and split seed give back the very validation images the run never trained on. The stored values
        are checked against the schema, and the files against the run's fingerprint (when it has one): data that
        changed since the run would give other images, so it is refused."""
        from digits import fingerprint as fp
        from digits.schema import DataConf, check_plain

        values = check_plain(DataConf, (cfg or {}).get("data"), "its data config")
        params = {k: v for k, v in values.items() if not k.startswith("_")}
        dm = cls(**{**params, "on_device": False})
        if fingerprint and fingerprint.get("data"):
            now = fp.data_identity(dm.data_dir) if dm.data_dir.is_dir() else {}
            diff = fp.data_difference(fingerprint["data"], now)
            if diff:
                raise UserError(f"{diff}; the run's validation images cannot be rebuilt", dm.data_dir)
        dm.prepare_data()
        dm.setup()
        return dm

    @property
    def data_dir(self) -> Path:
        return Path(self.dir) if self.dir else Path(self.root)

    def _files(self) -> tuple[Path, Path | None]:
        return data_files(self.data_dir)

    def prepare_data(self) -> None:
        """Fetch the default data if needed and fill the parse caches (runs once per node)."""
        if not self.dir:
            ensure_mnist(self.root)
        check_folder(self.data_dir)

    def load(self) -> tuple[DigitArrays, DigitArrays | None, Path, Path | None]:
        train_file, test_file = self._files()
        train = load_csv(train_file, require_label=True)
        test = load_csv(test_file) if test_file is not None else None
        return train, test, train_file, test_file

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        train, test, self.train_file, self.test_file = self.load()
        assert train.labels is not None
        tr_idx, va_idx = stratified_split(train.labels, self.val_fraction, self.split_seed)
        if len(va_idx) == 0 and self.val_fraction > 0:
            smallest = min(int((train.labels == c).sum()) for c in np.unique(train.labels))
            raise UserError(
                f"data.val_fraction={self.val_fraction} rounds to no validation row in any class (the smallest has "
                f"{smallest} rows of {len(train)}): use at least {0.5 / smallest:.2g}, or 0 to train without "
                "validation",
                self.train_file,
            )
        if len(tr_idx) == 0:
            raise UserError(
                f"too few rows ({len(train)}) to keep any for training with val_fraction={self.val_fraction}",
                self.train_file,
            )
        device = torch.device("cpu")
        if self.on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
        self.train = self._split(train, tr_idx, device)
        self.val = self._split(train, va_idx, device)
        self.test = self._split(test, None, device) if test is not None else None

    @staticmethod
    def _split(arrays: DigitArrays, idx: np.ndarray | None, device: torch.device) -> Split:
        images = arrays.images if idx is None else arrays.images[idx]
        labels = arrays.labels if (arrays.labels is None or idx is None) else arrays.labels[idx]
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
        y = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels)).to(device)
        return Split(x, y)

    def describe(self) -> dict:
        """Where the data came from and how it was split, for a run's record."""
        return {
            "dir": portable(self.data_dir),  # no path of this machine's cache in a record that may be shared
            "n_train": len(self.train) if self.train is not None else 0,
            "n_val": len(self.val) if self.val is not None else 0,
            "n_test": len(self.test) if self.test is not None else 0,
            "test_labelled": self.test_labelled,
        }

    @property
    def test_labelled(self) -> bool:
        return self.test is not None and self.test.labels is not None

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> TensorBatches:
        assert self.train is not None
        rank, world = self._rank()
        return TensorBatches(
            self.train.images,
            self.train.labels,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            epoch=self._epoch,
            augment=self.augment,
            rank=rank,
            world_size=world,
        )

    def val_dataloader(self) -> TensorBatches:
        assert self.val is not None
        rank, world = self._rank()
        return TensorBatches(
            self.val.images, self.val.labels, self.eval_batch_size, shuffle=False, rank=rank, world_size=world
        )
