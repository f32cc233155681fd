"""Decoded-image cache: decode, crop and resize a dataset once, then memory-map it.

Key: the source's fingerprint (file list with sizes and times, labels file bytes, split ...)
plus the transform (size, channels, crops). Files: ``KEY.u8`` (raw uint8 N x H x W x C) and
``KEY.json`` (shape, CRC-32, kept indices, skipped files), each written atomically
(facediff.atomic), the JSON last, so an interrupted build leaves no valid entry. A size or CRC
mismatch is detected and the entry rebuilt. Measured speed-up: see docs/performance.md and
bench/cache.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from facediff import atomic
from facediff.config import DataConfig
from facediff.data.records import ImageSet, Records, decode_records

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("FACEDIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facediff"


def cache_key(records: Records, cfg: DataConfig) -> str:
    desc = {"v": CACHE_VERSION, "kind": records.kind, "fingerprint": records.fingerprint,
            "n": len(records), "size": cfg.image_size, "channels": cfg.channels,
            "center_crop": cfg.center_crop, "crop_box": records.crop_box}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


def content_digest(arr: np.ndarray, chunk: int = 1 << 26) -> str:
    """A digest of an array's shape and bytes: the same pixels give the same digest, whatever
    the files' paths or modification times (which ``cache_key`` does depend on)."""
    h = hashlib.blake2b(json.dumps([list(arr.shape), str(arr.dtype)]).encode(), digest_size=16)
    flat = arr.reshape(-1)
    for start in range(0, flat.size, chunk):
        h.update(memoryview(np.ascontiguousarray(flat[start:start + chunk])))
    return h.hexdigest()


def _crc(arr: np.ndarray, chunk: int = 1 << 26) -> int:
    flat = arr.reshape(-1)
    crc = 0
    for start in range(0, flat.size, chunk):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(flat[start:start + chunk])), crc)
    return crc


def _load(base: Path, records: Records) -> ImageSet | None:
    meta_path, data_path = base.with_suffix(".json"), base.with_suffix(".u8")
    try:
        meta = json.loads(meta_path.read_text())
        if meta["version"] != CACHE_VERSION:
            raise ValueError(f"version {meta['version']}")
        shape = tuple(meta["shape"])
        if data_path.stat().st_size != int(np.prod(shape)):
            raise ValueError("data file has the wrong size")
        kept = [int(i) for i in meta["kept"]]
        if len(kept) != shape[0] or any(b <= a for a, b in itertools.pairwise(kept)) or \
                (kept and not 0 <= kept[0] <= kept[-1] < len(records)):
            raise ValueError("kept indices do not match the images")
        skipped = [(str(a), str(b)) for a, b in meta["skipped"]]
        sizes = [(int(w), int(h)) for w, h in meta["sizes"]]
        upscaled = int(meta["upscaled"])
        images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)
        if _crc(images) != meta["crc32"]:
            raise ValueError("checksum mismatch")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        log.warning("cache entry %s is corrupt (%s); rebuilding it", base.name, e)
        return None
    labels = records.labels[kept] if records.labels is not None else None
    return ImageSet(images, [records.keys[i] for i in kept], records.root, records.kind,
                    records.spec, labels, skipped, upscaled, list(records.notes), sizes, kept)


def _save(base: Path, data: ImageSet) -> None:
    """The pixels first, the metadata (with their CRC) last: no valid entry until both are
    in place."""
    atomic.write_with(base.with_suffix(".u8"),
                      lambda f: f.write(np.ascontiguousarray(data.images).tobytes()))
    meta = {"version": CACHE_VERSION, "shape": list(data.images.shape),
            "crc32": _crc(data.images), "kept": data.kept, "skipped": data.skipped,
            "upscaled": data.upscaled, "sizes": data.source_sizes, "root": data.root,
            "kind": data.kind}
    atomic.write_text(base.with_suffix(".json"), json.dumps(meta))


def load_cached(records: Records, cfg: DataConfig, progress: bool = True) -> ImageSet:
    """The decoded dataset: from the cache if a valid entry exists, else decoded and cached."""
    base = cache_root(cfg) / cache_key(records, cfg)
    hit = _load(base, records) if cfg.cache else None
    if hit is not None:
        log.info("using cached images %s (%d images)", base.with_suffix(".u8"), len(hit))
        return hit
    data = decode_records(records, cfg.image_size, channels=cfg.channels,
                          center_crop=cfg.center_crop, progress=progress)
    if cfg.cache:
        try:
            _save(base, data)
        except OSError as e:  # a read-only or full disk costs speed, not the run
            log.warning("could not write the image cache in %s: %s", base.parent, e)
    return data
