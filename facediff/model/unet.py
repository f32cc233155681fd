"""The network: diffusers' UNet2DModel built from a ModelConfig, with the condition embedding
of a conditional model."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from facediff.config import Config
from facediff.model.conditioning import ConditionEmbedding, Network


def build_net(cfg: Config) -> Network:
    """The network for ``cfg``: a U-Net, with a condition embedding if the config has
    conditions (``cfg.conditions``, filled in from the dataset)."""
    conditional = bool(cfg.conditions)
    unet = build_unet(cfg, conditional)
    if not conditional:
        return Network(unet)
    dim = unet.time_embedding.linear_2.out_features
    sizes = [len(c.values) for c in cfg.conditions]
    return Network(unet, ConditionEmbedding(sizes, dim))


def build_unet(cfg: Config, conditional: bool = False) -> UNet2DModel:
    """A UNet2DModel whose levels, attention, heads and dropout follow ``cfg.model``."""
    m = cfg.model
    levels = len(m.block_out_channels)
    attn = set(m.attention_levels)
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=cfg.data.image_size,
        in_channels=cfg.data.channels,
        out_channels=cfg.data.channels,
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
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
