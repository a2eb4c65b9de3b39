"""Label-preserving augmentation for whole batches, as tensor ops on the training device.

One affine warp per image (rotation, zoom, translation) drawn from a seeded generator, optionally bent by an
elastic distortion (Simard, Steinkraus and Platt, "Best Practices for Convolutional Neural Networks Applied to Visual
Document Analysis", 2003: a random displacement field smoothed by a Gaussian), applied with one `affine_grid` +
`grid_sample` call for the whole batch: no per-image Python, no host round trip.
"""

from __future__ import annotations

import functools
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
    elastic: float = 0.0  # alpha: scale of the smoothed displacement field, pixels (0: no elastic distortion)
    elastic_sigma: float = 6.0  # width of the Gaussian that smooths it, pixels

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Warp x ([B, 1, H, W], background 0) with one random affine map per image, elastically bent if asked."""
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
        if self.elastic > 0:  # drawn after the affine numbers, so runs without it keep their draws
            grid = grid + self._displacement(b, h, w, generator, x.device).to(x.dtype)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _displacement(self, b: int, h: int, w: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """A smooth random field [B, H, W, 2] in affine_grid's coordinates (one pixel is 2/W wide).

        Simard et al. blur uniform noise in [-1, 1] with a normalised Gaussian and scale it by alpha. Drawing that
        noise costs more than the blur: the field is drawn instead as R_h Z R_w^T, Z Gaussian with the noise's
        variance (1/3) and R = (K K^T)^(1/2) for the blur matrix K, which gives exactly the covariance of the
        blurred noise (and a blur over ~450 pixels is Gaussian to the eye) from an H x W draw, not (H+6s) x (W+6s).
        """
        z = torch.randn(b, 2, h, w, generator=generator, device=device, dtype=torch.float32) * (1 / 3) ** 0.5
        field = _blur_root(h, self.elastic_sigma, device) @ z @ _blur_root(w, self.elastic_sigma, device)
        field = field * self.elastic
        return torch.stack([field[:, 0] * (2 / w), field[:, 1] * (2 / h)], dim=-1)  # no host tensor per step


@functools.lru_cache(maxsize=16)
def _blur_root(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(K K^T)^(1/2), symmetric, for the 'valid' 1-D Gaussian blur K of n + 6 sigma noise values onto n pixels:
    the noise is drawn wider than the image so the field is as strong at the border as at the centre."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    blur = torch.zeros(n, n + 2 * r, dtype=torch.float64)
    for i in range(n):  # once per (size, sigma, device), never per image
        blur[i, i : i + 2 * r + 1] = k
    eigenvalues, vectors = torch.linalg.eigh(blur @ blur.T)
    return ((vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T).float().to(device)
