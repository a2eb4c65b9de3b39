"""Seeds derived from (seed, epoch, stream), shared by the batches, the augmentation and the LightningModule.

Each epoch's data order, augmentation draws and dropout draws depend only on these, so a run resumed from an
end-of-epoch checkpoint repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

ORDER, AUGMENT, DROPOUT = 0, 1, 2  # the streams


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A distinct, stable 63-bit seed per (seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 7919 + stream * 104_729) & 0x7FFF_FFFF_FFFF_FFFF
