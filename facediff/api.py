"""The Python API: ``facediff.load(path).sample(n=16, steps=25, seed=0)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UNet2DModel
from PIL import Image

from facediff.config import Config
from facediff.data.transforms import array_to_image
from facediff.diffusion.sampling import Callback, generate
from facediff.model import build_unet
from facediff.train.checkpoint import export_model, read_model


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class FaceModel:
    """A trained model ready to sample: its config and its (EMA) U-Net."""

    config: Config
    unet: UNet2DModel
    source: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> FaceModel:
        self.unet.to(device)
        return self

    def sample_tensor(
        self, n: int = 16, steps: int | None = None, sampler: str | None = None,
        seed: int = 0, batch_size: int = 16, eta: float | None = None,
        progress: bool = False, callback: Callback | None = None,
    ) -> torch.Tensor:
        """``n`` images as uint8 N x H x W x C (CPU)."""
        s = self.config.sample
        return generate(
            self.unet, self.config.diffusion, n, sampler or s.sampler, steps or s.steps,
            seed=seed, batch_size=batch_size, eta=s.eta if eta is None else eta,
            progress=progress, callback=callback,
        )

    def sample(self, n: int = 16, steps: int | None = None, sampler: str | None = None,
               seed: int = 0, batch_size: int = 16, eta: float | None = None,
               progress: bool = False) -> list[Image.Image]:
        """``n`` images as PIL images; the same seed gives the same images at any batch size."""
        arr = self.sample_tensor(n, steps, sampler, seed, batch_size, eta, progress).numpy()
        return [array_to_image(a) for a in arr]

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Export as config.yaml + weights.safetensors (optionally in float16)."""
        return export_model(path, self.config, self.unet.state_dict(),
                            dtype=torch.float16 if half else None)


def load(path: str | Path, device: str | torch.device | None = None) -> FaceModel:
    """Load an exported model dir, or a run dir (its export or latest checkpoint's EMA)."""
    cfg, weights, source = read_model(path)
    unet = build_unet(cfg)
    unet.load_state_dict({k: v.float() for k, v in weights.items()})
    unet.eval().requires_grad_(False)
    return FaceModel(cfg, unet.to(device or default_device()), source)
