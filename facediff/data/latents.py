"""The latent cache: a dataset's images encoded once by a latent model's autoencoder.

Each image and its mirror image are encoded (the encoder's mean), so training flips stay
exact: (N, 2, C, h, w) float32, index 1 the flipped image; with ``data.hflip: false`` only
the image (N, 1, C, h, w), at half the cost. The file's key covers the
autoencoder's weights (their digest), the decoded pixels (which follow from the data and the
transform: size, crop, channels) and the flips; any change encodes anew. It is written
atomically next to the image cache (``data.cache_dir``), and ``data.cache: false`` skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from facediff.atomic import write_with
from facediff.config import DataConfig
from facediff.data.cache import cache_root, content_digest
from facediff.data.transforms import uint8_to_model
from facediff.model.autoencoder import FirstStage

log = logging.getLogger(__name__)
LATENT_VERSION = 1
BATCH = 64


def latent_key(digest: str, images: np.ndarray, flips: bool = True) -> str:
    desc = {"v": LATENT_VERSION, "autoencoder": digest, "pixels": content_digest(images),
            "flips": "both" if flips else "none"}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


def latent_cache_path(cfg: DataConfig, digest: str, images: np.ndarray) -> Path:
    return cache_root(cfg) / f"latents-{latent_key(digest, images, cfg.hflip)}.npy"


@torch.inference_mode()
def encode_all(first_stage: FirstStage, images: np.ndarray, *,
               device: torch.device | str = "cpu", progress: bool = False,
               flips: bool = True) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, 2, C, h, w) float32 latents of the images and their
    mirror images (``flips``; else (N, 1, C, h, w), the images only)."""
    first_stage = first_stage.to(device).eval()
    out = []
    for start in tqdm(range(0, len(images), BATCH), desc="encoding latents", unit="batch",
                      disable=not progress):
        x = uint8_to_model(torch.from_numpy(np.array(images[start:start + BATCH])))
        x = x.to(device)
        z = first_stage.encode(torch.cat([x, x.flip(3)]) if flips else x)[0].float().cpu()
        out.append(torch.stack(z.chunk(2), dim=1) if flips else z[:, None])
    return torch.cat(out).numpy()


def encode_images(first_stage: FirstStage, images: np.ndarray, cfg: DataConfig, digest: str,
                  *, device: torch.device | str = "cpu", progress: bool = False) -> np.ndarray:
    """The latents of ``images`` (see ``encode_all``), from the cache when it has them."""
    sides = 2 if cfg.hflip else 1
    if not cfg.cache:
        return encode_all(first_stage, images, device=device, progress=progress,
                          flips=cfg.hflip)
    path = latent_cache_path(cfg, digest, images)
    if path.is_file():
        try:
            lat = np.load(path, mmap_mode="r")
            if lat.ndim == 5 and lat.shape[:2] == (len(images), sides):
                log.info("latents from the cache %s", path)
                return lat
        except (OSError, ValueError) as e:
            log.warning("the latent cache %s cannot be read (%s): encoding again", path, e)
    lat = encode_all(first_stage, images, device=device, progress=progress, flips=cfg.hflip)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_with(path, lambda f: np.save(f, lat))
    except OSError as e:  # a cache is a speed-up: training goes on without it
        log.warning("could not write the latent cache %s: %s", path, e)
    return lat


def latent_stats(latents: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel shift (mean) and scale (1 / std) of (N, 2, C, h, w) latents, so that the
    U-Net sees unit-variance latents (the "scale factor" of Rombach et al., per channel).
    Summed in float64 over chunks of images (no copy of the whole array)."""
    c = latents.shape[2]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(latents), chunk):
        part = np.asarray(latents[start:start + chunk], dtype=np.float64)
        total += part.sum(axis=(0, 1, 3, 4))
        sq += (part ** 2).sum(axis=(0, 1, 3, 4))
        count += part.size // c
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 0.0))
    return [float(m) for m in mean], [float(1 / max(s, 1e-6)) for s in std]
