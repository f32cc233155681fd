"""Cartoon faces drawn with Pillow: a dataset that needs no download, for the demo and tests.

Each face has a random background, skin tone, hair, eye spacing, smile and (sometimes) glasses,
so a model has real structure to learn in a few minutes on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SKIN = [(255, 224, 189), (234, 192, 134), (198, 134, 66), (141, 85, 36), (224, 172, 105)]
HAIR = [(20, 20, 20), (90, 56, 37), (200, 160, 80), (160, 60, 30), (120, 120, 120)]


def draw_face(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One cartoon face of ``size`` x ``size`` pixels, drawn at 4x and downsampled."""
    s = 4 * size
    bg = tuple(int(v) for v in rng.integers(40, 220, 3))
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    skin = SKIN[rng.integers(len(SKIN))]
    hair = HAIR[rng.integers(len(HAIR))]
    cx = s / 2 + rng.normal(0, s * 0.03)
    cy = s / 2 + rng.normal(0, s * 0.03) + s * 0.04
    rx, ry = s * rng.uniform(0.28, 0.34), s * rng.uniform(0.34, 0.40)
    # hair behind the head, then the head
    d.ellipse([cx - rx * 1.1, cy - ry * 1.15, cx + rx * 1.1, cy + ry * 0.3], fill=hair)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    # eyes
    ex, ey = rx * rng.uniform(0.35, 0.5), cy - ry * rng.uniform(0.1, 0.25)
    er = s * 0.045
    iris = tuple(int(v) for v in rng.integers(0, 160, 3))
    for sx in (-1, 1):
        x = cx + sx * ex
        d.ellipse([x - er, ey - er * 0.8, x + er, ey + er * 0.8], fill=(255, 255, 255))
        d.ellipse([x - er * 0.5, ey - er * 0.5, x + er * 0.5, ey + er * 0.5], fill=iris)
    if rng.random() < 0.3:  # glasses
        for sx in (-1, 1):
            x = cx + sx * ex
            d.ellipse([x - er * 1.8, ey - er * 1.5, x + er * 1.8, ey + er * 1.5],
                      outline=(10, 10, 10), width=max(2, s // 64))
        d.line([cx - ex + er * 1.8, ey, cx + ex - er * 1.8, ey], fill=(10, 10, 10),
               width=max(2, s // 64))
    # nose and mouth
    d.line([cx, ey + er, cx - er * 0.6, cy + ry * 0.2], fill=tuple(c - 40 for c in skin),
           width=max(2, s // 80))
    my, mw = cy + ry * rng.uniform(0.4, 0.55), rx * rng.uniform(0.3, 0.55)
    smile = rng.random() < 0.6
    box = [cx - mw, my - ry * 0.15, cx + mw, my + ry * 0.15]
    if smile:
        d.chord(box, 0, 180, fill=(150, 30, 40))
    else:
        d.line([cx - mw, my, cx + mw, my], fill=(150, 30, 40), width=max(3, s // 50))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def make_faces(out_dir: str | Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Write ``n`` synthetic faces as PNG files into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = out / f"face_{i:05d}.png"
        draw_face(rng, size).save(p)
        paths.append(p)
    return paths
