"""Label-preserving augmentation for whole batches, as tensor ops on the training device.

One affine warp per image (rotation, zoom, translation) drawn from a seeded generator, applied with one
`affine_grid` + `grid_sample` call for the whole batch: no per-image Python, no host round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random shifts and small rotations keep a digit's label (the report's remedy for overfitting)."""

    rotate: float = 12.0  # maximum rotation, degrees, drawn uniformly in [-rotate, rotate]
    translate: float = 2.0  # maximum shift, pixels, per axis
    zoom: float = 0.0  # maximum relative scale change, e.g. 0.1 for 0.9x-1.1x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Warp x ([B, 1, H, W], background 0) with one random affine map per image."""
        b, _, h, w = x.shape
        u = torch.rand(b, 4, generator=generator, device=x.device, dtype=torch.float32) * 2 - 1
        angle = u[:, 0] * math.radians(self.rotate)
        scale = 1 + u[:, 1] * self.zoom
        # affine_grid works in [-1, 1] coordinates: one pixel is 2/W wide.
        tx = u[:, 2] * self.translate * 2 / w
        ty = u[:, 3] * self.translate * 2 / h
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
