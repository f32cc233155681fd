"""Which device to run on: the best one here, or the one a user named (``--device``)."""

from __future__ import annotations

import torch

from facediff.errors import FacediffError


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """``auto`` or a torch device name -> a device that is here (else a FacediffError)."""
    try:
        device = default_device() if name == "auto" else torch.device(name)
    except RuntimeError:
        raise FacediffError(f"unknown --device {name!r} (auto, cpu, cuda, cuda:N, mps)")\
            from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise FacediffError(f"--device {name} requested but that CUDA device is not "
                            "available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FacediffError("--device mps requested but MPS is not available")
    return device
