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

``AutoencoderTraining`` holds the autoencoder and its discriminator for the trainer
(facediff.train.autoencoder); ``load_autoencoder`` reads a trained one back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, VQModel
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from facediff.config import Config

Kind = Literal["tiny", "kl", "vq"]


class FirstStage(nn.Module):
    """An image autoencoder: ``encode`` to latents (and the KL term), ``decode`` back."""

    def __init__(self, net: AutoencoderTiny | AutoencoderKL | VQModel, factor: int) -> None:
        super().__init__()
        self.net = net
        self.factor = factor
        self.latent_channels = int(net.config.latent_channels)
        self.trained_config: Config | None = None  # its run's config (load_autoencoder)

    @property
    def kind(self) -> Kind:
        if isinstance(self.net, VQModel):
            return "vq"
        return "kl" if isinstance(self.net, AutoencoderKL) else "tiny"

    def encode(self, x: torch.Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> latents (B, latent_channels, H/f, W/f) and the KL
        term per input value (zero for the deterministic AutoencoderTiny). ``sample``: draw
        from the KL posterior (training) instead of taking its mean, with ``noise`` (unit
        Gaussian, the latents' shape) or noise drawn from ``generator``."""
        if isinstance(self.net, AutoencoderKL):
            dist = self.net.encode(x).latent_dist
            z = dist.mean
            if sample:
                eps = noise if noise is not None else \
                    torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
                z = dist.mean + dist.std * eps.to(dist.mean.device, dist.mean.dtype)
            return z, dist.kl().mean() / x[0].numel()
        return self.net.encode(x).latents, x.new_zeros(())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in (about) [-1, 1]."""
        return self.net.decode(z).sample


def _groups(channels: int) -> int:
    """GroupNorm groups of at least 4 channels (32 at 128, as in Stable Diffusion's VAE): with
    one channel per group the norm cancels the conv bias before it, whose gradient is then
    rounding noise that Adam turns into full-size steps (two ranks drift apart)."""
    return max(1, min(32, channels // 4))


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
            latent_channels=latent_channels, norm_num_groups=_groups(int(block_out_channels[0])))
    else:
        raise ValueError(f"unknown autoencoder kind {kind!r}; choose tiny or kl")
    return FirstStage(net, 2 ** (levels - 1))


def build_first_stage(cfg: Config) -> FirstStage:
    """The (untrained) autoencoder that ``cfg.autoencoder`` describes."""
    ae = cfg.autoencoder
    if ae.kind == "none":
        raise ValueError("the config describes no autoencoder (autoencoder.kind is none)")
    if ae.kind == "vq":  # a diffusers LDMPipeline's VQModel, exactly as it was configured
        config = {k: v for k, v in ae.vq_config.items() if not k.startswith("_")}
        return FirstStage(VQModel(**config), 2 ** (len(ae.block_out_channels) - 1))
    return build_autoencoder(ae.kind, cfg.data.channels,
                             block_out_channels=ae.block_out_channels,
                             blocks_per_level=ae.blocks_per_level,
                             latent_channels=ae.latent_channels)


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, shapes and float32 values (the latent cache's key)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().float().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load_autoencoder(path: str | Path) -> tuple[FirstStage, Config, str]:
    """A trained autoencoder (an exported one, or an autoencoder run dir: its export or
    newest checkpoint) in inference mode on the CPU, its config and its weights' digest.
    Anything else is a one-line ``FacediffError``."""
    from facediff.errors import FacediffError
    from facediff.train.checkpoint import CorruptError, read_model

    cfg, weights, source = read_model(path)
    if cfg.task != "autoencoder":
        raise FacediffError(f"{source} is a diffusion model, not an autoencoder (train one "
                            "with: facediff autoencoder train)")
    first = build_first_stage(cfg)
    # a checkpoint holds the training module (ae.* and disc.*); an export the autoencoder
    state = {k: v.float() for k, v in weights.items() if not k.startswith("disc.")}
    if state and all(k.startswith("ae.") for k in state):
        state = {k[len("ae."):]: v for k, v in state.items()}
    try:
        first.load_state_dict(state)
    except RuntimeError as e:
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CorruptError(f"the weights of {source} do not fit the autoencoder its "
                           f"config.yaml describes ({detail})") from None
    first.eval().requires_grad_(False)
    first.trained_config = cfg
    return first, cfg, weights_digest(first.state_dict())


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (Isola et al. 2017): strided convolutions to a map of real/fake logits,
    one per patch, so it judges texture, which L1 and SSIM blur."""

    def __init__(self, channels: int = 3, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(layers - 1):  # no bias before a norm: it would learn only noise
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                     nn.GroupNorm(min(32, 2 * c), 2 * c),
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
    with torch.autocast(x.device.type, enabled=False):  # the window sums in float32
        s = ssim((y + 1) / 2, (x + 1) / 2, data_range=1.0, win_size=7)
    return l1 + ssim_weight * (1 - s)


def discriminator_hinge_loss(real_logits: torch.Tensor,
                             fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_adv = -mean(D(x_hat)): the autoencoder's term against the discriminator."""
    return -fake_logits.mean()


class AutoencoderTraining(nn.Module):
    """What an autoencoder run trains: the autoencoder (``.ae``, what is exported) and its
    patch discriminator (``.disc``), one optimizer over both. ``forward`` returns the whole
    loss, so one backward pass trains both (and DDP sees one forward):

    * the autoencoder's: L1 + ssim_weight (1 - SSIM) + kl_weight KL, plus adv_weight L_adv
      once ``adversarial`` is on; L_adv's gradient reaches only the autoencoder (the
      discriminator is called with detached weights for it);
    * the discriminator's hinge loss on the originals and the detached reconstructions,
      from the first step (so it is trained when L_adv is switched on).
    """

    def __init__(self, ae: FirstStage, disc: PatchDiscriminator, *, ssim_weight: float,
                 kl_weight: float, adv_weight: float) -> None:
        super().__init__()
        self.ae, self.disc = ae, disc
        self.ssim_weight, self.kl_weight, self.adv_weight = ssim_weight, kl_weight, adv_weight

    def forward(self, x: torch.Tensor, adversarial: bool = False,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The losses of a batch; ``noise``: the KL posterior's draw (its latents' shape)."""
        z, kl = self.ae.encode(x, sample=self.ae.kind == "kl" and noise is not None,
                               noise=noise)
        y = self.ae.decode(z)
        rec = reconstruction_loss(x, y, ssim_weight=self.ssim_weight)
        d_loss = discriminator_hinge_loss(self.disc(x).float(), self.disc(y.detach()).float())
        loss = rec + self.kl_weight * kl.float() + d_loss
        out = {"rec": rec.detach(), "disc": d_loss.detach()}
        if adversarial and self.adv_weight > 0:
            frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
            fake = torch.func.functional_call(self.disc, frozen, (y,)).float()
            adv = generator_adversarial_loss(fake)
            loss = loss + self.adv_weight * adv
            out["adv"] = adv.detach()
        out["loss"] = loss
        return out


def build_training_module(cfg: Config) -> AutoencoderTraining:
    """The autoencoder and discriminator an autoencoder run with ``cfg`` trains."""
    ae = cfg.autoencoder
    return AutoencoderTraining(
        build_first_stage(cfg),
        PatchDiscriminator(cfg.data.channels, ae.disc_width, ae.disc_layers),
        ssim_weight=ae.ssim_weight, kl_weight=ae.kl_weight, adv_weight=ae.adv_weight)
