"""An AlexNet-style net scaled to 1x28x28 (Krizhevsky et al., 2012: five convolutions, three max-pools, a
three-layer classifier with dropout), at half AlexNet's widths, 3x3 kernels after the first, stride 1.

Its table (`python -m digits.summary model=alexnet`):

    ----------------------------------------------------------------
            Layer (type)               Output Shape         Param #
    ================================================================
                Conv2d-1           [-1, 48, 28, 28]           1,248
                  ReLU-2           [-1, 48, 28, 28]               0
             MaxPool2d-3           [-1, 48, 14, 14]               0
                Conv2d-4          [-1, 128, 14, 14]          55,424
                  ReLU-5          [-1, 128, 14, 14]               0
             MaxPool2d-6            [-1, 128, 7, 7]               0
                Conv2d-7            [-1, 192, 7, 7]         221,376
                  ReLU-8            [-1, 192, 7, 7]               0
                Conv2d-9            [-1, 192, 7, 7]         331,968
                 ReLU-10            [-1, 192, 7, 7]               0
               Conv2d-11            [-1, 128, 7, 7]         221,312
                 ReLU-12            [-1, 128, 7, 7]               0
            MaxPool2d-13            [-1, 128, 3, 3]               0
              Flatten-14                 [-1, 1152]               0
              Dropout-15                 [-1, 1152]               0
               Linear-16                  [-1, 512]         590,336
                 ReLU-17                  [-1, 512]               0
              Dropout-18                  [-1, 512]               0
               Linear-19                  [-1, 512]         262,656
                 ReLU-20                  [-1, 512]               0
               Linear-21                   [-1, 10]           5,130
    ================================================================
    Total params: 1,689,450
    Trainable params: 1,689,450
    Non-trainable params: 0
    ----------------------------------------------------------------
"""

from __future__ import annotations

import torch
from torch import nn


class AlexNet(nn.Module):
    # Training step at batch 128 on a 2-core Xeon (AVX-512), torch 2.13: 703 images/s channels_last, 653 not.
    channels_last_on_cpu = True

    def __init__(self, num_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 48, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(48, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 192, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(128 * 3 * 3, 512),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
