"""The network: diffusers' U-Net with an optional condition embedding."""

from facediff.model.conditioning import ConditionEmbedding, Network
from facediff.model.unet import build_net, build_unet, count_parameters

__all__ = ["ConditionEmbedding", "Network", "build_net", "build_unet", "count_parameters"]
