"""facediff: train diffusion models that generate faces, and control, evaluate and show them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "FaceModel", "SamplingSettings", "__version__", "load", "train"]

if TYPE_CHECKING:
    from facediff.api import FaceModel, load
    from facediff.config import Config
    from facediff.diffusion.samplers import SamplingSettings
    from facediff.train.trainer import train


def __getattr__(name: str) -> Any:  # lazy, so `import facediff` and the CLI start fast
    if name in ("load", "FaceModel"):
        from facediff import api

        return getattr(api, name)
    if name == "Config":
        from facediff.config import Config

        return Config
    if name == "SamplingSettings":
        from facediff.diffusion.samplers import SamplingSettings

        return SamplingSettings
    if name == "train":
        from facediff.train.trainer import train

        return train
    raise AttributeError(f"module 'facediff' has no attribute {name!r}")
