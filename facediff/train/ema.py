"""EMA of the weights with its length measured in images seen (Karras et al. 2022, EDM).

diffusers' EMAModel does the averaging (with fused foreach updates); only the decay differs:
per optimizer step ``decay = 0.5 ** (batch / half_life)``, where during ramp-up the half-life
is at most ``rampup * images_seen``. A fixed 0.9999 on a short run averages in the random
initialisation and gives noise (diffusers #1772, improved-diffusion #59); this does not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.training_utils import EMAModel


class HalfLifeEMA(EMAModel):
    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        batch_size: int,
        halflife_images: float,
        rampup: float | None = 0.05,
    ) -> None:
        super().__init__(parameters, foreach=True)
        self.batch_size = batch_size
        self.halflife_images = halflife_images
        self.rampup = rampup

    def get_decay(self, optimization_step: int) -> float:
        halflife = float(self.halflife_images)
        if self.rampup:
            halflife = min(halflife, optimization_step * self.batch_size * self.rampup)
        if halflife <= 0:
            return 0.0
        return 0.5 ** (self.batch_size / halflife)

    def named_state(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The network's state dict with the averaged values in place of its parameters."""
        state = dict(net.state_dict())
        for (name, _), shadow in zip(net.named_parameters(), self.shadow_params, strict=True):
            state[name] = shadow
        return state

    def load_named_state(self, net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        for (name, _), shadow in zip(net.named_parameters(), self.shadow_params, strict=True):
            shadow.copy_(state[name].to(shadow.device, shadow.dtype))

    def checksum(self) -> torch.Tensor:
        """One float64 number summarising the averaged weights (to compare ranks)."""
        return torch.stack([p.detach().double().sum() for p in self.shadow_params]).sum()
