"""The Python API: ``facediff.load(path).sample(n=16, steps=25, seed=0)``.

``facediff.load()`` with no path loads the bundled face model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from facediff.config import Config
from facediff.data.conditions import ConditionSpec, parse_requests, spec_from_entries
from facediff.data.transforms import array_to_image
from facediff.diffusion.sampling import Callback, generate
from facediff.model import Denoiser, build_model
from facediff.train.checkpoint import export_model, read_model

Attrs = Mapping[str, object] | Sequence[str] | None


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class FaceModel:
    """A trained model ready to sample: its config and its (EMA) denoiser."""

    config: Config
    net: Denoiser
    source: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def spec(self) -> ConditionSpec:
        """The conditions this model can be asked for (empty: unconditional)."""
        return spec_from_entries(self.config.conditions)

    def to(self, device: str | torch.device) -> FaceModel:
        self.net.to(device)
        return self

    def labels(self, attrs: Attrs) -> torch.Tensor:
        """Requested attributes -> value indices (K,), -1 where unspecified.

        ``attrs``: {"Smiling": 1, "race": "Asian"} or ["Smiling=1", "race=Asian"].
        """
        if attrs is None:
            attrs = []
        if isinstance(attrs, Mapping):
            attrs = [f"{k}={v}" for k, v in attrs.items()]
        return torch.tensor(parse_requests(self.spec, list(attrs)), dtype=torch.long)

    def cond(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Value indices (K,) or (N, K) -> soft one-hot conditions (None: unconditional)."""
        if self.net.cond is None or bool((labels < 0).all()):
            return None
        return self.net.cond.one_hot(labels.reshape(-1, labels.shape[-1]).to(self.device))

    def sample_tensor(
        self, n: int = 16, steps: int | None = None, sampler: str | None = None,
        seed: int = 0, batch_size: int = 16, eta: float | None = None,
        progress: bool = False, callback: Callback | None = None, attrs: Attrs = None,
        guidance: float | None = None, guidance_rescale: float | None = None,
        cond: torch.Tensor | None = None, noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` images as uint8 N x H x W x C (CPU), optionally with attributes fixed."""
        s = self.config.sample
        if cond is None:
            cond = self.cond(self.labels(attrs))
        return generate(
            self.net, self.config.diffusion, n, sampler or s.sampler, steps or s.steps,
            seed=seed, batch_size=batch_size, eta=s.eta if eta is None else eta,
            progress=progress, callback=callback, cond=cond,
            guidance=s.guidance if guidance is None else guidance,
            guidance_rescale=s.guidance_rescale if guidance_rescale is None
            else guidance_rescale, noise=noise,
        )

    def sample(self, n: int = 16, steps: int | None = None, sampler: str | None = None,
               seed: int = 0, batch_size: int = 16, eta: float | None = None,
               progress: bool = False, attrs: Attrs = None,
               guidance: float | None = None) -> list[Image.Image]:
        """``n`` images as PIL images; the same seed gives the same images at any batch size."""
        arr = self.sample_tensor(n, steps, sampler, seed, batch_size, eta, progress,
                                 attrs=attrs, guidance=guidance).numpy()
        return [array_to_image(a) for a in arr]

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Export as config.yaml + weights.safetensors (optionally in float16)."""
        return export_model(path, self.config, self.net.state_dict(),
                            dtype=torch.float16 if half else None)


def load(path: str | Path | None = None, device: str | torch.device | None = None,
         conditional: bool = False) -> FaceModel:
    """Load an exported model dir, a run dir (its export or latest checkpoint's EMA) or a
    bundled model by name (``facediff.assets.BUNDLED``).

    With no path: the bundled unconditional face model, or with ``conditional=True`` the
    bundled attribute-conditional one.
    """
    cfg, weights, source = read_model(path, conditional)
    net = build_model(cfg)
    net.load_state_dict({k: v.float() for k, v in weights.items()})
    net.eval().requires_grad_(False)
    return FaceModel(cfg, net.to(device or default_device()), source)
