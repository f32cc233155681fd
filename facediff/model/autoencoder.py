"""The first stage of latent diffusion: an image autoencoder and the losses that train it.

The networks are diffusers' (``AutoencoderTiny``, deterministic; ``AutoencoderKL``, a
Gaussian posterior), behind one interface: ``encode(x) -> (z, kl)``, ``decode(z) -> x`` for
images in [-1, 1], a spatial ``factor`` and ``latent_channels``. On this project's CPU an
f=4 AutoencoderTiny reached 29.1 dB held-out PSNR at 64 px after 12 minutes, against 27.6 for
a same-size AutoencoderKL (docs/latent.md, bench/autoencoder_pilot.py).

The loss follows the latent-diffusion first stage (Rombach et al. 2022, after Esser et al.
2021): reconstruction L1 + ``ssim_weight`` (1 - SSIM) (SSIM from ``pytorch-msssim``, no
download; LPIPS would fetch VGG weights) + ``kl_weight`` KL, and, after a warm-up, a small
patch discriminator with the hinge loss:

    L_D = mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))),    L_adv = -mean(D(x_hat)).

Not wired into training yet: docs/latent.md has the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from torch import nn
from torch.nn import functional as F

Kind = Literal["tiny", "kl"]


class FirstStage(nn.Module):
    """An image autoencoder: ``encode`` to latents (and the KL term), ``decode`` back."""

    def __init__(self, net: AutoencoderTiny | AutoencoderKL, factor: int) -> None:
        super().__init__()
        self.net = net
        self.factor = factor
        self.latent_channels = int(net.config.latent_channels)

    @property
    def kind(self) -> Kind:
        return "kl" if isinstance(self.net, AutoencoderKL) else "tiny"

    def encode(self, x: torch.Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> latents (B, latent_channels, H/f, W/f) and the KL
        term per input value (zero for the deterministic AutoencoderTiny). ``sample``: draw
        from the KL posterior (training) instead of taking its mean."""
        if isinstance(self.net, AutoencoderKL):
            dist = self.net.encode(x).latent_dist
            z = dist.mean
            if sample:
                eps = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
                z = dist.mean + dist.std * eps.to(dist.mean.device)
            return z, dist.kl().mean() / x[0].numel()
        return self.net.encode(x).latents, x.new_zeros(())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in (about) [-1, 1]."""
        return self.net.decode(z).sample


def build_autoencoder(kind: Kind = "tiny", channels: int = 3, *,
                      block_out_channels: Sequence[int] = (48, 48, 48),
                      blocks_per_level: int = 2, latent_channels: int = 4) -> FirstStage:
    """A first stage with ``len(block_out_channels)`` levels, so a spatial factor of
    2 ** (levels - 1). AutoencoderTiny takes one width for every level (the first value)."""
    levels = len(block_out_channels)
    if levels < 1:
        raise ValueError("block_out_channels must list at least one level")
    if kind == "tiny":
        width = (int(block_out_channels[0]),) * levels
        blocks = (1, *[blocks_per_level] * (levels - 1))
        net: AutoencoderTiny | AutoencoderKL = AutoencoderTiny(
            in_channels=channels, out_channels=channels, encoder_block_out_channels=width,
            decoder_block_out_channels=width, latent_channels=latent_channels,
            num_encoder_blocks=blocks, num_decoder_blocks=tuple(reversed(blocks)))
    elif kind == "kl":
        net = AutoencoderKL(
            in_channels=channels, out_channels=channels,
            block_out_channels=tuple(int(c) for c in block_out_channels),
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=blocks_per_level,
            latent_channels=latent_channels, norm_num_groups=min(32, int(block_out_channels[0])))
    else:
        raise ValueError(f"unknown autoencoder kind {kind!r}; choose tiny or kl")
    return FirstStage(net, 2 ** (levels - 1))


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (Isola et al. 2017): strided convolutions to a map of real/fake logits,
    one per patch, so it judges texture, which L1 and SSIM blur."""

    def __init__(self, channels: int = 3, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(min(32, 2 * c), 2 * c),
                     nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def reconstruction_loss(x: torch.Tensor, y: torch.Tensor, *,
                        ssim_weight: float = 0.2) -> torch.Tensor:
    """L1 + ssim_weight (1 - SSIM) of a reconstruction ``y`` of ``x`` (both in [-1, 1]; SSIM
    in float32 on [0, 1], with a 7-pixel window so that 16 px images work; ``y`` is not
    clamped, so the SSIM term's gradient reaches values outside the range too)."""
    from pytorch_msssim import ssim

    x, y = x.float(), y.float()
    l1 = (y - x).abs().mean()
    if ssim_weight == 0:
        return l1
    s = ssim((y + 1) / 2, (x + 1) / 2, data_range=1.0, win_size=7)
    return l1 + ssim_weight * (1 - s)


def discriminator_hinge_loss(real_logits: torch.Tensor,
                             fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_adv = -mean(D(x_hat)): the autoencoder's term against the discriminator."""
    return -fake_logits.mean()
