"""A fully connected net (the report's "ANN"): 784 -> hidden... -> 10, ReLU, dropout after each hidden layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ANN(nn.Module):
    def __init__(self, num_classes: int = 10, hidden: Sequence[int] = (512, 256), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
