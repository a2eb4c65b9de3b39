"""The report's CNN, layer for layer (its torchsummary table: 187,062 parameters).

ReLU and max-pooling are functional calls, as in the report's code: that is why its table lists neither, and why
`python -m digits.summary model=original` reproduces the table's numbering exactly.

`channels` (the widths of the three stages: two 5x5 convolutions, two 3x3, then a 3x3 and a 1x1) and `hidden` (the
fully connected layer) default to the report's 32, 64, 128 and 100. The 5x5 stage at full resolution does most of
the arithmetic, so the later stages widen cheaply: [32, 128, 256] with hidden 256 has 3.4 times the parameters for
1.38 times the time of an epoch of `experiment=best` (results/best_wide).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class OriginalCNN(nn.Module):
    # Training step at batch 128 on a 2-core Xeon (AVX-512), torch 2.13: 2,093 images/s channels_last, 1,641 not.
    channels_last_on_cpu = True

    def __init__(
        self,
        num_classes: int = 10,
        dropout: float = 0.25,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 100,
    ):
        super().__init__()
        a, b, c = channels
        self.conv1 = nn.Conv2d(1, a, 5)  # 32x24x24 (with the report's widths)
        self.bn1 = nn.BatchNorm2d(a)
        self.conv2 = nn.Conv2d(a, a, 5)  # 32x20x20
        self.bn2 = nn.BatchNorm2d(a)
        self.drop1 = nn.Dropout2d(dropout)  # after pooling: 32x10x10
        self.conv3 = nn.Conv2d(a, b, 3)  # 64x8x8
        self.bn3 = nn.BatchNorm2d(b)
        self.conv4 = nn.Conv2d(b, b, 3)  # 64x6x6
        self.bn4 = nn.BatchNorm2d(b)
        self.drop2 = nn.Dropout2d(dropout)  # after pooling: 64x3x3
        self.conv5 = nn.Conv2d(b, c, 3)  # 128x1x1
        self.bn5 = nn.BatchNorm2d(c)
        self.conv6 = nn.Conv2d(c, c, 1)  # 128x1x1
        self.bn6 = nn.BatchNorm2d(c)
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.drop1(F.max_pool2d(x, 2))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        x = self.drop2(F.max_pool2d(x, 2))
        x = F.relu(self.bn5(self.conv5(x)))
        x = F.relu(self.bn6(self.conv6(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
