"""Image-folder source: every jpg/png/webp/bmp under a folder, decoded once to uint8."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from facediff.data.transforms import image_to_array
from facediff.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class ImageSet:
    """Decoded images (uint8, N x H x W x C) and where they came from."""

    images: np.ndarray
    names: list[str]
    root: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    upscaled: int = 0

    def __len__(self) -> int:
        return len(self.images)


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted). A missing or empty folder is an error."""
    r = Path(root)
    if not r.exists():
        raise DataError(f"data folder not found: {r}")
    if not r.is_dir():
        raise DataError(f"data path is not a folder: {r}")
    files = sorted(
        p for p in r.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"no images in {r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _decode(path: Path, size: int, channels: int, center_crop: bool) -> tuple:
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos: apply the stored rotation
            small = min(img.size) < size
            return image_to_array(img, size, channels, center_crop), small, None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, False, reason


def load_image_folder(
    root: str | Path,
    image_size: int,
    channels: int = 3,
    center_crop: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> ImageSet:
    """Decode, crop and resize every image under ``root`` once.

    Unreadable files are skipped with a warning that counts them and names the first few;
    images smaller than ``image_size`` are upscaled and counted. If nothing is readable the
    folder is an error.
    """
    files = find_images(root)
    return decode_files(files, Path(root), image_size, channels, center_crop, progress, workers)


def decode_files(
    files: Sequence[Path],
    root: Path,
    image_size: int,
    channels: int = 3,
    center_crop: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> ImageSet:
    workers = workers or min(8, os.cpu_count() or 1)
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    upscaled = 0
    kept = 0
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: _decode(p, image_size, channels, center_crop), files,
                           chunksize=16)
        bar = tqdm(results, total=len(files), desc="decoding images", unit="img",
                   disable=not progress or len(files) < 256, leave=False)
        for path, (arr, small, err) in zip(files, bar, strict=False):
            rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            if arr is None:
                skipped.append((rel, err or "unreadable"))
                continue
            out[kept] = arr
            names.append(rel)
            upscaled += small
            kept += 1
    if skipped:
        first = ", ".join(f"{n} ({why})" for n, why in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        log.warning(
            "skipped %d of %d unreadable images in %s: %s%s",
            len(skipped), len(files), root, first, more,
        )
    if upscaled:
        log.warning("%d images smaller than %dpx were upscaled", upscaled, image_size)
    if kept == 0:
        raise DataError(f"none of the {len(files)} image files in {root} could be read")
    return ImageSet(out[:kept], names, str(root), skipped, upscaled)
