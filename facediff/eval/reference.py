"""Reference features of a dataset, cached per prepared image set and feature network.

The images are prepared by the data pipeline exactly as for training (source, split, face
crop, centre crop, size, channels), so a 32 px model is compared with the data at 32 px.
A subset of ``n`` images is a prefix of one fixed random order of the dataset; the cache keeps
the features of the longest prefix computed so far and extends it when more are asked for,
so 10k reference features are never recomputed to score against 5k, and vice versa.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facediff import atomic
from facediff.config import DataConfig
from facediff.data.conditions import ConditionSpec
from facediff.eval.features import FeatureExtractor, extract_features

log = logging.getLogger(__name__)
_VERSION = 1
_CHUNK = 2048  # images per saved step of the cache


@dataclass
class Reference:
    """Features (n, D) of n dataset images, with their labels (n, K) when the set has any."""

    features: np.ndarray
    labels: np.ndarray | None
    spec: ConditionSpec | None
    total: int  # images in the dataset (split), of which ``len(features)`` were used
    description: str  # e.g. "celebahq-64 (all, 64 px)"

    def __len__(self) -> int:
        return len(self.features)


def _order(n: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(n)


def _load_prefix(path: Path, dim: int) -> np.ndarray:
    try:
        arr = np.load(path)
        if arr.ndim != 2 or arr.shape[1] != dim or not np.isfinite(arr).all():
            raise ValueError(f"shape {arr.shape}")
        return arr
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("reference features %s are corrupt (%s); recomputing", path.name, e)
    return np.zeros((0, dim), np.float32)


def reference_features(cfg: DataConfig, extractor: FeatureExtractor, *, n: int | None = None,
                       batch_size: int = 32, progress: bool = True) -> Reference:
    """Features of ``n`` images (default: all) of the dataset ``cfg`` points at."""
    from facediff.data.cache import cache_root, content_digest, load_cached
    from facediff.data.sources import load_records

    records = load_records(cfg)
    data = load_cached(records, cfg, progress)
    total = len(data)
    want = total if n is None else min(n, total)
    if n is not None and n > total:
        log.warning("the reference has %d images, fewer than the %d asked for", total, n)
    # keyed by the prepared pixels, not by the files' times: a dataset copied or re-laid
    # elsewhere keeps its features (minutes on a CPU), while any change to an image, the
    # split, crop or size gives a new key
    key = hashlib.sha256(json.dumps(
        {"v": _VERSION, "pixels": content_digest(data.images), "net": extractor.ident}
    ).encode()).hexdigest()[:32]
    path = cache_root(cfg) / "features" / f"{key}.npy"
    order = _order(total)
    have = _load_prefix(path, extractor.num_features) if cfg.cache else \
        np.zeros((0, extractor.num_features), np.float32)
    name = Path(records.root).name or records.root
    while len(have) < want:  # in chunks, each saved: an interrupted run keeps its work
        part = order[len(have):min(want, len(have) + _CHUNK)]
        idx = np.sort(part)  # sorted reads from the memory map, then back to ``part``'s order
        new = extract_features(data.images[idx], extractor, batch_size=batch_size,
                               progress=progress,
                               desc=f"reference features ({name}, {len(have)}+{len(part)}"
                                    f" of {want})")[np.argsort(np.argsort(part))]
        have = np.concatenate([have, new])
        if cfg.cache:
            try:
                atomic.write_with(path, lambda f, arr=have: np.save(f, arr))
            except OSError as e:
                log.warning("could not cache reference features in %s: %s", path.parent, e)
    log.info("reference features %s (%d cached)", path, len(have))
    chosen = order[:want]
    labels = data.labels[chosen] if data.labels is not None else None
    split = cfg.split or "all"
    desc = f"{Path(records.root).name} ({split}, {cfg.image_size} px)"
    return Reference(have[:want], labels, data.spec, total, desc)
