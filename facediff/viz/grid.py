"""Image grids."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from facediff.data.transforms import array_to_image


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2,
              pad_value: int = 255) -> Image.Image:
    """uint8 NHWC images tiled into one picture, ``nrow`` per row (default: near-square)."""
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError("make_grid expects uint8 images of shape N x H x W x C")
    n, h, w, c = arr.shape
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / ncol)
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = arr[i]
    return array_to_image(grid)
