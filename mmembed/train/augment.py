"""Augmentations that make clip art and emoji look a little more like photographs.

The training images are drawings on white; the demo's query images are often photos. Each view gets a
random zoom/shift/mirror, and with some probability a coloured or noisy background behind the drawing
(the white canvas is what gives a drawing away), colour jitter, grayscale and blur. All random draws come
from the caller's torch.Generator, so a step's augmentation is reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def geometric(pixels: torch.Tensor, generator: torch.Generator, min_scale: float = 0.75) -> torch.Tensor:
    """Random mirror, zoom in [min_scale, 1] and shift: one affine resample for the whole batch."""
    import torch
    from torch.nn import functional as F

    n = len(pixels)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale = min_scale + (1 - min_scale) * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.25
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, padding_mode="border", align_corners=False)


def photographic(pixels: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Background, colour, grayscale and blur changes on (n, 3, s, s) pixels in [0, 1]."""
    import torch
    from torch.nn import functional as F

    n = len(pixels)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, 1, 1, 1, generator=generator) < p * strength).float()

    # a background behind the drawing: a flat colour or a smooth two-colour gradient, plus grain
    background = pixels.min(dim=1, keepdim=True).values > 0.94
    top = torch.rand(n, 3, 1, 1, generator=generator)
    bottom = torch.rand(n, 3, 1, 1, generator=generator)
    ramp = torch.linspace(0, 1, pixels.shape[-2]).view(1, 1, -1, 1)
    fill = top * (1 - ramp) + bottom * ramp
    fill = (fill + 0.08 * torch.randn(pixels.shape, generator=generator)).clamp(0, 1)
    pixels = torch.where(background & (chance(0.5) > 0), fill, pixels)
    # brightness, contrast and saturation jitter
    brightness = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.6 * strength
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.6 * strength
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = ((pixels - mean) * contrast + mean) * brightness
    gray = pixels.mean(dim=1, keepdim=True)
    saturation = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.8 * strength
    pixels = gray + (pixels - gray) * saturation
    pixels = torch.where(chance(0.15) > 0, pixels.mean(dim=1, keepdim=True).expand_as(pixels), pixels)
    blurred = F.avg_pool2d(pixels, 3, stride=1, padding=1, count_include_pad=False)
    pixels = torch.where(chance(0.3) > 0, blurred, pixels)
    return pixels.clamp(0, 1)


def augment(pixels: torch.Tensor, generator: torch.Generator, photo: bool = True) -> torch.Tensor:
    if len(pixels) == 0:
        return pixels
    pixels = geometric(pixels, generator, min_scale=0.75 if photo else 0.85)
    return photographic(pixels, generator) if photo else pixels
