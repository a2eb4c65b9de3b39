"""The CNN of Chris Deotte's Kaggle notebooks "How to choose CNN Architecture MNIST" and "25 Million Images!
[0.99757] MNIST" (2018): the architecture those experiments converged on, layer for layer.

Two blocks of three convolutions each, where the third is a learnable 5x5 stride-2 downsampling instead of a max
pool, then a 4x4 convolution to 128 features, dropout 0.4 after each block and before the classifier. Each
convolution is followed by ReLU and then batch normalization, in that order, as in the Keras original. Its 'same'
padding of the stride-2 convolutions is padding 2 here: the same output sizes (28 -> 26 -> 24 -> 12 -> 10 -> 8 ->
4 -> 1), 326,410 parameters.

It costs about what the report's CNN does (30 MFLOP forward per image, against 27) but reaches its features in
another way (strided convolutions for max pools, elementwise dropout for Dropout2d): a second family of ensemble
members. `results/overlap.py` measures how much its mistakes differ from those of `original`.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding), nn.ReLU(), nn.BatchNorm2d(c_out)]


class DeotteCNN(nn.Module):
    # Training step at batch 128, bf16 autocast, on a 2-core Xeon with AMX, torch 2.13, two runs each beside another
    # training job: 918 and 955 images/s channels_last, 704 and 679 not.
    channels_last_on_cpu = True

    def __init__(self, num_classes: int = 10, dropout: float = 0.4):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(1, 32, 3),  # 32x26x26
            *_conv(32, 32, 3),  # 32x24x24
            *_conv(32, 32, 5, stride=2, padding=2),  # 32x12x12
            nn.Dropout(dropout),
            *_conv(32, 64, 3),  # 64x10x10
            *_conv(64, 64, 3),  # 64x8x8
            *_conv(64, 64, 5, stride=2, padding=2),  # 64x4x4
            nn.Dropout(dropout),
            *_conv(64, 128, 4),  # 128x1x1
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
