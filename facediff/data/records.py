"""What every source hands over: image keys, a way to open each image, and labels.

Sources (``facediff/data/sources``) only say where images and labels are; decoding,
cropping and resizing happen once, here (and in the cache), the same way for every source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from facediff.data.conditions import ConditionSpec
from facediff.data.transforms import DECODE_ERRORS, check_decode_budget, image_to_array
from facediff.errors import DataError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass
class Records:
    """A dataset before decoding."""

    kind: str  # "folder", "celeba", "hf", "utkface", "mnist"
    root: str
    keys: list[str]  # one per image: a relative path or an id
    open_image: Callable[[int], Image.Image]  # the i-th image, as PIL
    spec: ConditionSpec | None = None
    labels: np.ndarray | None = None  # (N, len(spec)) int16, UNSPECIFIED where unknown
    fingerprint: str = ""  # changes whenever the images or labels change
    notes: list[str] = field(default_factory=list)  # what was skipped or converted
    crop_box: Box | None = None  # applied before the square crop (CelebA's face crop)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class ImageSet:
    """Decoded images (uint8, N x H x W x C), their names and labels."""

    images: np.ndarray
    names: list[str]
    root: str
    kind: str = "folder"
    spec: ConditionSpec | None = None
    labels: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    upscaled: int = 0
    notes: list[str] = field(default_factory=list)
    source_sizes: list[tuple[int, int]] = field(default_factory=list)  # (w, h) before resize
    kept: list[int] = field(default_factory=list)  # indices into the Records' keys

    def __len__(self) -> int:
        return len(self.images)


def _decode_one(records: Records, i: int, size: int, channels: int, center_crop: bool):
    img = None
    try:
        img = records.open_image(i)  # PIL opens lazily: only the header is read so far
        check_decode_budget(img)
        img.load()
        img = ImageOps.exif_transpose(img)  # phone photos: apply the stored rotation
        src = img.size
        if records.crop_box is not None:
            img = img.crop(records.crop_box)
        small = min(img.size) < size
        return image_to_array(img, size, channels, center_crop), small, src, None
    except DECODE_ERRORS as e:
        if img is not None:
            img.close()  # e.g. one over the budget: never loaded, its file still open
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, False, None, reason


def decode_records(
    records: Records,
    image_size: int,
    *,
    channels: int = 3,
    center_crop: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> ImageSet:
    """Decode, crop and resize every image once (threads; PIL releases the GIL).

    Unreadable images, and images over the decode budget (``MAX_DECODED_BYTES``, checked from
    the header before decoding) or Pillow's decompression-bomb limit, are skipped with a
    warning that counts them and names the first few with the reason (their label rows go
    with them); images smaller than ``image_size`` are upscaled and
    counted. If nothing is readable the dataset is an error.
    """
    n = len(records)
    if n == 0:
        raise DataError(f"no images in {records.root}")
    if len(set(records.keys)) != n:
        dup = next(k for k in records.keys if records.keys.count(k) > 1)
        raise DataError(f"{records.root} lists the image {dup!r} more than once")
    workers = workers or min(8, os.cpu_count() or 1)
    out = np.empty((n, image_size, image_size, channels), dtype=np.uint8)
    keep: list[int] = []
    skipped: list[tuple[str, str]] = []
    sizes: list[tuple[int, int]] = []
    upscaled = 0
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda i: _decode_one(records, i, image_size, channels, center_crop),
                           range(n), chunksize=16)
        bar = tqdm(results, total=n, desc="decoding images", unit="img",
                   disable=not progress or n < 256, leave=False)
        for i, (arr, small, src, err) in enumerate(bar):
            if arr is None:
                skipped.append((records.keys[i], err or "unreadable"))
                continue
            out[len(keep)] = arr
            keep.append(i)
            sizes.append(src)
            upscaled += small
    if skipped:
        first = ", ".join(f"{k} ({why})" for k, why in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        log.warning("skipped %d of %d unreadable or too large images in %s: %s%s",
                    len(skipped), n, records.root, first, more)
    if upscaled:
        log.warning("%d images smaller than %dpx were upscaled", upscaled, image_size)
    if not keep:
        raise DataError(f"none of the {n} images in {records.root} could be read")
    labels = records.labels[keep] if records.labels is not None else None
    return ImageSet(out[:len(keep)], [records.keys[i] for i in keep], records.root,
                    records.kind, records.spec, labels, skipped, upscaled, list(records.notes),
                    sizes, keep)
