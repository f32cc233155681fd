"""Data: sources (folder, labels file, CelebA, Hugging Face, UTKFace, MNIST) -> condition spec
and labels -> decoded uint8 images (cached) -> batches on the device."""

from __future__ import annotations

from facediff.config import DataConfig
from facediff.data.records import ImageSet, Records

__all__ = ["ImageSet", "Records", "load_data"]


def load_data(cfg: DataConfig, progress: bool = True) -> ImageSet:
    """Load the dataset a data config points at (decoded once, then from the cache)."""
    import logging

    from facediff.data.cache import load_cached
    from facediff.data.sources import load_records

    records = load_records(cfg)
    for note in records.notes:  # skipped rows, unknown labels: said, never silent
        logging.getLogger("facediff.data").warning("%s", note)
    return load_cached(records, cfg, progress)
