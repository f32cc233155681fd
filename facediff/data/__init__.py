"""Data sources: each turns a dataset on disk into decoded uint8 images (and, later, labels)."""

from __future__ import annotations

from facediff.config import DataConfig
from facediff.data.folder import ImageSet, load_image_folder
from facediff.errors import DataError

__all__ = ["ImageSet", "load_data"]


def load_data(cfg: DataConfig, progress: bool = True) -> ImageSet:
    """Load the dataset a data config points at."""
    if not cfg.path:
        raise DataError("no data path: pass --data DIR (or set data.path)")
    if cfg.source == "folder":
        return load_image_folder(cfg.path, cfg.image_size, cfg.channels, cfg.center_crop,
                                 progress=progress)
    raise DataError(f"unknown data source {cfg.source!r}")
