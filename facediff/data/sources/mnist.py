"""MNIST in the official IDX format (gzip or raw): ``train-images-idx3-ubyte[.gz]`` and
``train-labels-idx1-ubyte[.gz]``, and the same with ``t10k`` for the test set."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.config import DataConfig
from facediff.data.conditions import Condition, ConditionSpec
from facediff.data.records import Records
from facediff.data.sources.folder import data_root
from facediff.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
PREFIXES = {"train": "train", "test": "t10k"}  # split -> file name prefix
SPLIT_ALIASES = {"train": "train", "test": "test", "t10k": "test"}
SUBDIRS = ("", "raw", "MNIST/raw")  # torchvision keeps the files in MNIST/raw/


def _candidates(prefix: str, kind: str, idx: int) -> list[str]:
    bases = [f"{prefix}-{kind}-idx{idx}-ubyte", f"{prefix}-{kind}.idx{idx}-ubyte"]
    return bases + [b + ".gz" for b in bases]


def _find(root: Path, prefix: str, kind: str, idx: int) -> Path | None:
    for sub in SUBDIRS:
        d = root / sub if sub else root
        for name in _candidates(prefix, kind, idx):
            if (d / name).is_file():
                return d / name
    return None


def _pairs(root: Path) -> dict[str, tuple[Path | None, Path | None]]:
    """split -> (images file, labels file), for every split with at least one of them."""
    out = {}
    for split, prefix in PREFIXES.items():
        images, labels = _find(root, prefix, "images", 3), _find(root, prefix, "labels", 1)
        if images is not None or labels is not None:
            out[split] = (images, labels)
    return out


def is_mnist(path: Path) -> bool:
    """Whether ``path`` holds a complete pair of MNIST IDX files (images and labels)."""
    p = Path(path)
    return p.is_dir() and any(i is not None and lab is not None
                              for i, lab in _pairs(p).values())


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read MNIST file {path}: {e}") from e


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file, after checking its magic number and size."""
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"MNIST file {path} is truncated ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"MNIST file {path} has magic number 0x{found:08x}, expected "
                        f"0x{magic:08x} ({'images' if ndim == 3 else 'labels'}); "
                        "is it an IDX file of the right kind?")
    dims = [int(d) for d in np.frombuffer(data, ">u4", ndim, 4)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"MNIST file {path} has {len(data)} bytes but its header "
                        f"({' x '.join(map(str, dims))}) needs {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _load_split(split: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC, 3)
    labels = read_idx(labels_path, LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise DataError(f"MNIST {split}: {images_path.name} has {len(images)} images but "
                        f"{labels_path.name} has {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise DataError(f"MNIST labels file {labels_path} has a label {labels.max()} (not 0-9)")
    if min(images.shape[1:]) < 1:
        raise DataError(f"MNIST file {images_path} holds empty images ({images.shape})")
    return images, labels


def mnist_records(cfg: DataConfig) -> Records:
    """MNIST digits (``cfg.split``: None = train then test, whichever exist; train; test)."""
    root = data_root(cfg.path)
    pairs = _pairs(root)
    if cfg.split in (None, "", "all"):
        splits = list(pairs)
        if not splits:
            raise DataError(f"no MNIST IDX files in {root} (expected e.g. "
                            "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz)")
    else:
        split = SPLIT_ALIASES.get(cfg.split.strip().lower())
        if split is None:
            raise DataError(f"unknown MNIST split {cfg.split!r}; choose all, train or test")
        if split not in pairs:
            prefix = PREFIXES[split]
            raise DataError(f"no MNIST {split} files in {root} (expected "
                            f"{prefix}-images-idx3-ubyte[.gz] and "
                            f"{prefix}-labels-idx1-ubyte[.gz])")
        splits = [split]
    arrays, digits, keys, used = [], [], [], []
    for split in splits:
        images_path, labels_path = pairs[split]
        if images_path is None or labels_path is None:
            have = images_path or labels_path
            kind, idx = ("labels", 1) if images_path is not None else ("images", 3)
            raise DataError(f"{have} has no matching {kind} file: expected "
                            f"{_candidates(PREFIXES[split], kind, idx)[0]}[.gz] beside it")
        images, labels = _load_split(split, images_path, labels_path)
        arrays.append(images)
        digits.append(labels)
        keys += [f"{split}/{i:05d}" for i in range(len(images))]
        used += [images_path, labels_path]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"MNIST files in {root} hold images of different sizes: {shapes}")
    if not keys:
        raise DataError(f"the MNIST files in {root} hold no images")
    images = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    labels = np.concatenate(digits).astype(np.int16)[:, None]
    h = hashlib.sha256()
    for p in used:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    spec = ConditionSpec([Condition("digit", "categorical", [str(d) for d in range(10)])])
    return Records("mnist", str(root), keys, lambda i: Image.fromarray(images[i]), spec,
                   labels, h.hexdigest())
