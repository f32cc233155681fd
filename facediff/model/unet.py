"""The network: diffusers' UNet2DModel built from a ModelConfig, with the condition embedding
of a conditional model."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from facediff.config import Config, sample_shape
from facediff.model.autoencoder import build_first_stage
from facediff.model.conditioning import ConditionEmbedding, Network


def build_net(cfg: Config) -> Network:
    """The network for ``cfg``: a U-Net, with a condition embedding if the config has
    conditions (``cfg.conditions``, filled in from the dataset) and the (untrained) first
    stage of a latent model (its weights are loaded with the rest, or by the trainer)."""
    conditional = bool(cfg.conditions)
    unet = build_unet(cfg, conditional)
    cond = None
    if conditional:
        dim = unet.time_embedding.linear_2.out_features
        cond = ConditionEmbedding([len(c.values) for c in cfg.conditions], dim)
    if cfg.autoencoder.kind == "none":
        return Network(unet, cond)
    return Network(unet, cond, build_first_stage(cfg), shift=cfg.autoencoder.shift,
                   scale=cfg.autoencoder.scale)


def build_unet(cfg: Config, conditional: bool = False) -> UNet2DModel:
    """A UNet2DModel whose levels, attention, heads and dropout follow ``cfg.model``."""
    m = cfg.model
    levels = len(m.block_out_channels)
    attn = set(m.attention_levels)
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels)))
    channels, side, _ = sample_shape(cfg)
    return UNet2DModel(
        sample_size=side,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(m.block_out_channels),
        layers_per_block=m.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=m.attention_head_dim,
        add_attention=m.mid_attention,
        dropout=m.dropout,
        norm_num_groups=m.norm_num_groups,
        resnet_time_scale_shift=m.resnet_time_scale_shift,
        class_embed_type="identity" if conditional else None,
        **_extra(m.unet_extra),
    )


def _extra(extra: object) -> dict:
    if not isinstance(extra, dict):
        from facediff.errors import ConfigError

        raise ConfigError(f"model.unet_extra must be a mapping of UNet2DModel arguments, got "
                          f"{extra!r}")
    return extra


ATTENTION_KERNELS = ("auto", "sdpa", "math")


def resolve_attention(kernel: str, device: torch.device) -> str:
    """``auto``: the plain matmul-softmax-matmul attention on CPUs, PyTorch's
    scaled_dot_product_attention elsewhere. On this project's CPU (2 Zen 4 cores, bf16
    autocast) the plain kernel made the 32-64-128 U-Net's training step 6-22% faster than the
    CPU flash-attention kernel behind SDPA, whose backward alone had taken 4% of the step
    (docs/performance.md, "A faster training step"). At inference the two were the same."""
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"attention kernel must be one of {', '.join(ATTENTION_KERNELS)}, "
                         f"got {kernel!r}")
    if kernel == "auto":
        return "math" if device.type == "cpu" else "sdpa"
    return kernel


def set_attention(net: torch.nn.Module, kernel: str, device: torch.device) -> str:
    """Give every attention layer of ``net`` the kernel ``kernel`` resolves to on ``device``
    (the weights and the maths are the same; only speed and rounding differ). Returns it."""
    chosen = resolve_attention(kernel, device)
    for module in net.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor() if chosen == "math" else AttnProcessor2_0())
    return chosen


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
