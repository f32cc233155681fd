from facediff.model.conditioning import ConditionEmbedding, Denoiser
from facediff.model.unet import build_model, build_unet, count_parameters

__all__ = ["ConditionEmbedding", "Denoiser", "build_model", "build_unet", "count_parameters"]
