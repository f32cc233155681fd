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
    for conditional models, its condition embedding (``.cond``). Called as
    ``net(x_t, t, labels=None, soft=None).sample`` -> the prediction (eps, v or x0)."""

    def __init__(self, unet: UNet2DModel, cond: ConditionEmbedding | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.cond = cond

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
