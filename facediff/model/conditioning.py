"""Condition embedding: any subset of attributes can be fixed, the rest left "unspecified".

Each condition k with V_k values gets V_k + 1 one-hot slots (the last one: unspecified); the
slots of all conditions are concatenated and mapped by one bias-free linear layer to the
U-Net's time-embedding width, i.e. a sum of per-condition embeddings, added to the time
embedding (UNet2DModel with ``class_embed_type="identity"``). All conditions unspecified is
the fully unconditional state that classifier-free guidance contrasts against. Blending two
one-hot vectors (``soft``) moves smoothly between values, which attribute interpolation uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from diffusers import UNet2DModel
from torch import nn

from facediff.data.conditions import UNSPECIFIED
from facediff.model.autoencoder import FirstStage


def _per_channel(values: Sequence[float], channels: int, default: float) -> torch.Tensor:
    out = torch.full((channels,), default) if not values else torch.tensor(list(values))
    return out.float().reshape(1, channels, 1, 1)


class ConditionEmbedding(nn.Module):
    def __init__(self, sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        offsets = [0]
        for s in self.sizes:
            offsets.append(offsets[-1] + s + 1)
        self.register_buffer("offsets", torch.tensor(offsets[:-1]), persistent=False)
        self.total = offsets[-1]
        self.proj = nn.Linear(self.total, dim, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, K) value indices (UNSPECIFIED allowed) -> (B, total) concatenated one-hots."""
        if labels.shape[-1] != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} conditions, got {labels.shape[-1]}")
        sizes = torch.tensor(self.sizes, device=labels.device)
        idx = torch.where(labels == UNSPECIFIED, sizes, labels.long())  # the last slot
        out = torch.zeros(labels.shape[0], self.total, device=labels.device)
        out.scatter_(1, idx + self.offsets.to(labels.device), 1.0)
        return out

    def forward(self, soft: torch.Tensor) -> torch.Tensor:
        return self.proj(soft.to(self.proj.weight.dtype))


class Network(nn.Module):
    """The network a model trains and samples (``net``): diffusers' U-Net (``.unet``) plus,
    for conditional models, its condition embedding (``.cond``) and, for latent models, the
    frozen autoencoder whose latents the U-Net denoises (``.first_stage``). Called as
    ``net(x_t, t, labels=None, soft=None).sample`` -> the prediction (eps, v or x0).

    A latent model's U-Net sees ``(z - shift) * scale`` per channel (``to_latent``);
    ``decode`` maps such a latent back to an image in [-1, 1]."""

    def __init__(self, unet: UNet2DModel, cond: ConditionEmbedding | None = None,
                 first_stage: FirstStage | None = None, *, shift: Sequence[float] = (),
                 scale: Sequence[float] = ()) -> None:
        super().__init__()
        self.unet = unet
        self.cond = cond
        self.first_stage = first_stage
        if first_stage is not None:
            first_stage.requires_grad_(False)
            c = first_stage.latent_channels
            self.register_buffer("latent_shift", _per_channel(shift, c, 0.0), persistent=False)
            self.register_buffer("latent_scale", _per_channel(scale, c, 1.0), persistent=False)

    @property
    def latent(self) -> bool:
        return self.first_stage is not None

    def to_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> the U-Net's latents (the encoder's mean)."""
        assert self.first_stage is not None
        z, _ = self.first_stage.encode(images.to(self.latent_scale.dtype))
        return (z.float() - self.latent_shift) * self.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The U-Net's latents -> images (B, C, H, W), clamped to [-1, 1]."""
        assert self.first_stage is not None
        z = latents.float() / self.latent_scale + self.latent_shift
        return self.first_stage.decode(z.to(self.latent_scale.dtype)).float().clamp(-1, 1)

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        if self.first_stage is not None:  # frozen: always in inference mode
            self.first_stage.eval()
        return self

    @property
    def config(self) -> SimpleNamespace:
        return self.unet.config

    @property
    def num_conditions(self) -> int:
        return 0 if self.cond is None else len(self.cond.sizes)

    def unconditional_labels(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.full((n, self.num_conditions), UNSPECIFIED, dtype=torch.long,
                          device=device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                soft: torch.Tensor | None = None) -> SimpleNamespace:
        if self.cond is None:
            return self.unet(x, t)
        if soft is None:
            if labels is None:
                labels = self.unconditional_labels(x.shape[0], x.device)
            soft = self.cond.one_hot(labels)
        return self.unet(x, t, class_labels=self.cond(soft))
