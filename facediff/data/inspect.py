"""``facediff data inspect``: what a dataset holds, before any training."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facediff.config import DataConfig
from facediff.data.cache import load_cached
from facediff.data.conditions import format_stats, label_stats
from facediff.data.records import ImageSet
from facediff.data.sources import load_records
from facediff.viz.grid import make_grid


@dataclass
class Report:
    data: ImageSet
    grid_path: Path | None

    def text(self) -> str:
        d = self.data
        lines = [f"source       {d.kind}: {d.root}",
                 f"images       {len(d)} usable, {len(d.skipped)} unreadable"]
        sizes = Counter(d.source_sizes)
        if sizes:
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(5))
            more = f", {len(sizes) - 5} other sizes" if len(sizes) > 5 else ""
            lines.append(f"sizes        {common}{more}")
            short = [min(s) for s in d.source_sizes]
            lines.append(f"short side   min {min(short)}, median {int(np.median(short))}, "
                         f"max {max(short)}; {d.upscaled} smaller than the target were upscaled")
        for name, why in d.skipped[:5]:
            lines.append(f"unreadable   {name}: {why}")
        if len(d.skipped) > 5:
            lines.append(f"unreadable   ... and {len(d.skipped) - 5} more")
        for note in d.notes:
            lines.append(f"note         {note}")
        if d.spec is not None and len(d.spec) and d.labels is not None:
            lines.append(f"conditions   {len(d.spec)}:")
            lines.append(format_stats(label_stats(d.spec, d.labels)))
        else:
            lines.append("conditions   none (unconditional)")
        if self.grid_path is not None:
            lines.append(f"grid         {self.grid_path}")
        return "\n".join(lines)


def inspect_dataset(cfg: DataConfig, grid_path: str | Path | None = None, *, n_grid: int = 64,
                    seed: int = 0, progress: bool = True) -> Report:
    """Decode (or read from the cache) the dataset, and write a grid of random images."""
    data = load_cached(load_records(cfg), cfg, progress)
    out = None
    if grid_path is not None:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(data), size=min(n_grid, len(data)), replace=False))
        out = Path(grid_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        make_grid(np.asarray(data.images[pick])).save(out)
    return Report(data, out)
