"""Batched data augmentation on float image tensors in [0, 1], random parameters per image.

Flip, rotation, translation and noise are a few tensor ops each (a whole batch at once, no
per-image Python); colour jitter comes from kornia, which torchvision does not offer per image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False           # horizontal flip with probability 0.5
    rotate_degrees: float = 0.0   # rotation by a uniform angle in [-d, d]
    translate_px: int = 0         # shift by a uniform whole number of pixels in [-t, t], x and y
    hue: float = 0.0              # colour jitter, torchvision semantics (kornia ColorJitter)
    saturation: float = 0.0
    noise_std: float = 0.0        # additive Gaussian noise (image in [0, 1]), then clamped

    @property
    def active(self) -> bool:
        return any(asdict(self).values())


class BatchAugment(nn.Module):
    def __init__(self, config: AugmentConfig):
        super().__init__()
        self.config = config
        self.jitter = None
        if config.hue or config.saturation:
            import kornia.augmentation as K
            self.jitter = K.ColorJitter(brightness=0.0, contrast=0.0,
                                        saturation=config.saturation, hue=config.hue, p=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        n = x.shape[0]
        if c.hflip:
            flip = torch.rand(n, device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if c.rotate_degrees or c.translate_px:
            x = self._affine(x)
        if self.jitter is not None:
            x = self.jitter(x)
        if c.noise_std:
            x = (x + c.noise_std * torch.randn_like(x)).clamp_(0.0, 1.0)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate about the centre and translate; uncovered pixels are black, as in
        torchvision's RandomRotation."""
        c = self.config
        n, _, h, w = x.shape
        angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(c.rotate_degrees)
        cos, sin = angle.cos(), angle.sin()
        # affine_grid maps output to input coordinates in [-1, 1]; a whole-pixel shift is 2/size
        shift = torch.randint(-c.translate_px, c.translate_px + 1, (n, 2), device=x.device)
        theta = torch.stack([
            torch.stack([cos, -sin, shift[:, 0] * 2.0 / w], dim=1),
            torch.stack([sin, cos, shift[:, 1] * 2.0 / h], dim=1),
        ], dim=1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
