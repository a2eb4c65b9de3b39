"""Batches sliced from tensors that already live on the training device.

The report's loop indexes one sample at a time and collates on the host; at MNIST's size the whole data set fits on
any device as uint8 (47 MB), so each epoch is one seeded permutation and a slice per step. The order depends only on
(seed, epoch), which is what makes a killed-and-resumed run identical to one left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from digits.data.augment import Augment
from digits.seeding import AUGMENT, ORDER, stream_seed

# MNIST's pixel mean and standard deviation (on [0, 1]); used for every data set so checkpoints stay comparable.
MEAN, STD = 0.1307, 0.3081


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels to the float input every model expects."""
    return (x.float() / 255.0 - MEAN) / STD


class TensorBatches:
    """An iterable of (x, y) batches (x float, normalized) for Lightning; len() is the number of batches.

    shuffle=True: training order, a fresh permutation per epoch, equal-size shards per DDP rank, partial last batch
    dropped (static shapes). shuffle=False: every sample once, in order, the rank's contiguous share.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        augment: Augment | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch, self.augment = epoch, augment
        self.rank, self.world_size = rank, world_size
        n = len(images)
        if shuffle:
            self.per_rank = n // world_size
            self.n_batches = max(1, self.per_rank // batch_size) if self.per_rank else 0
        else:
            bounds = [n * r // world_size for r in range(world_size + 1)]
            self.lo, self.hi = bounds[rank], bounds[rank + 1]
            self.n_batches = -(-(self.hi - self.lo) // batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def _order(self, epoch: int) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, ORDER))
        perm = torch.randperm(len(self.images), generator=g)
        perm = perm[: self.per_rank * self.world_size].view(self.per_rank, self.world_size)[:, self.rank]
        return perm.to(self.images.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch()
        perm = self._order(epoch)
        gen = None
        if self.augment is not None:
            gen = torch.Generator(device=self.images.device).manual_seed(stream_seed(self.seed, epoch, AUGMENT))
        bs = self.batch_size
        for i in range(self.n_batches):
            if perm is not None:
                idx = perm[i * bs : min((i + 1) * bs, len(perm))]
                x = self.images.index_select(0, idx)
                y = None if self.labels is None else self.labels.index_select(0, idx)
            else:
                lo, hi = self.lo + i * bs, min(self.lo + (i + 1) * bs, self.hi)
                x = self.images[lo:hi]
                y = None if self.labels is None else self.labels[lo:hi]
            x = normalize(x) if gen is None else self._augmented(x, gen)
            yield (x,) if y is None else (x, y)

    def _augmented(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # Warp grey levels in [0, 1] so the zero padding grid_sample adds is the digit's background.
        assert self.augment is not None
        return (self.augment(x.float() / 255.0, gen) - MEAN) / STD
