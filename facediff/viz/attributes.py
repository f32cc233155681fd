"""The attribute grid: per attribute a row with it off and a row with it on, a column per seed.

Every cell of a column starts from the same noise, so a row pair shows what switching one
attribute changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw

from facediff.viz.grid import make_grid

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.diffusion.samplers import SamplingSettings


def attribute_grid(
    model: FaceModel, names: Sequence[str] | None = None, *, n_seeds: int = 6,
    settings: SamplingSettings | None = None, base_attrs: Sequence[str] = (),
    progress: bool = False,
) -> Image.Image:
    """A labelled grid; ``names`` default to all of the model's conditions. Column ``j``
    uses seed ``settings.seed + j`` in every row."""
    from facediff.errors import FacediffError

    spec = model.spec
    if not len(spec):
        raise FacediffError("this model is unconditional: it has no attributes to switch")
    if names is None:
        names = [c.name for c in spec.conditions]
    rows, labels_text = [], []
    for name in names:
        cond = spec.get(name)
        values = cond.values if cond.kind == "categorical" else ["0", "1"]
        for v in values:
            attrs = [a for a in base_attrs if a.split("=")[0].strip() != cond.name]
            imgs = model.sample_tensor(n_seeds, settings=settings, progress=progress,
                                       attrs=[*attrs, f"{cond.name}={v}"])
            rows.append(imgs)
            state = ("on" if v == "1" else "off") if cond.kind == "binary" else v
            labels_text.append(f"{cond.name}={state}")
    grid = make_grid(torch.cat(rows), nrow=n_seeds)
    return _label_rows(grid, labels_text, rows[0].shape[1])


def _label_rows(grid: Image.Image, labels: list[str], cell: int, pad: int = 2) -> Image.Image:
    width = max(8 * max(len(s) for s in labels) + 8, 60)
    out = Image.new("RGB", (grid.width + width, grid.height), "white")
    out.paste(grid.convert("RGB"), (width, 0))
    d = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        y = pad + i * (cell + pad) + cell // 2 - 5
        d.text((4, y), text, fill=(0, 0, 0))
    return out
