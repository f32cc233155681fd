from facediff.model.unet import build_unet, count_parameters

__all__ = ["build_unet", "count_parameters"]
