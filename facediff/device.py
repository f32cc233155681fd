"""Which device to run on: the best one here, or the one a user named (``--device``)."""

from __future__ import annotations

import torch

from facediff.config import PRECISIONS
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


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Native bf16 maths on this CPU (AVX512-BF16 or AMX): bf16 pays off only there."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def check_precision(name: str) -> str:
    """``name`` if it is one of ``PRECISIONS``, else a FacediffError."""
    if name not in PRECISIONS:
        raise FacediffError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return name


def resolve_precision(name: str, device: torch.device) -> str:
    """An inference precision for ``device``: ``auto`` is bf16 on CUDA (fp16 where the GPU
    has no bf16) and on CPUs with native bf16, else fp32 (MPS included)."""
    check_precision(name)
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """An autocast context for a resolved precision (disabled for fp32): the network's
    convolutions and matrix products run in bf16/fp16; everything else stays fp32."""
    dtype = _DTYPES.get(precision, torch.bfloat16)
    return torch.autocast(device.type, dtype=dtype, enabled=precision in _DTYPES)
