"""Image transforms: the memory budget for decoding an image, any PIL mode to the model's mode,
crop and resize, and the one place where pixels are scaled between uint8 [0, 255] and the
model's [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageMode

from facediff.errors import DataError

_RESAMPLE = Image.Resampling.LANCZOS

# The most decoded pixel bytes one image may take: 256 MiB, about 89 megapixels in RGB, which
# is Pillow's own DecompressionBombWarning threshold (Image.MAX_IMAGE_PIXELS). Pillow refuses
# only at twice that, and a 13000x13000 PNG below its limit costs gigabytes once converted and
# resized; a face photo needs a small fraction of this. Checked from the header, before decoding.
MAX_DECODED_BYTES = 256 * 2**20


class ImageTooLargeError(DataError):
    """An image whose decoded pixels would exceed ``MAX_DECODED_BYTES``."""


# what opening, decoding and converting a bad image file can raise (UnidentifiedImageError
# and "image file is truncated" are OSErrors; PIL's plugins raise SyntaxError for broken files)
DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, ImageTooLargeError)


def decoded_bytes(img: Image.Image) -> int:
    """The bytes an image's pixels take decoded (width x height x bands x bytes per sample),
    read from its header: nothing is decoded."""
    mode = ImageMode.getmode(img.mode)
    return img.width * img.height * len(mode.bands) * np.dtype(mode.typestr).itemsize


def check_decode_budget(img: Image.Image) -> None:
    """Refuse, before anything decodes it, an image larger than ``MAX_DECODED_BYTES``: its
    decoded pixels, or the RGB copy converting it makes (a grey or palette image of many
    pixels is small stored but not converted)."""
    need = max(decoded_bytes(img), img.width * img.height * 3)
    if need > MAX_DECODED_BYTES:
        raise ImageTooLargeError(
            f"{img.width}x{img.height} {img.mode} needs {_in_units(need)} decoded, over the "
            f"{_in_units(MAX_DECODED_BYTES)} budget for one image "
            f"(facediff.data.transforms.MAX_DECODED_BYTES)")


def _in_units(n: int) -> str:
    if n >= 10 * 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB" if n >= 10 * 2**10 else f"{n} bytes"


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image (palette, RGBA, CMYK, 16-bit, float, 1-bit) to RGB or L.

    Transparent pixels are composited on white; 16/32-bit integer and float images are
    scaled by their actual range to 8 bits rather than clipped.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "F" and arr.max() <= 1.0:
            hi = 1.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    elif (mode == "P" and "transparency" in img.info) or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    target = "RGB" if channels == 3 else "L"
    if img.mode != target:
        img = img.convert(target)
    return img


def crop_resize(img: Image.Image, size: int, center_crop: bool = True) -> Image.Image:
    """Center-crop to a square (or keep the whole image) and resize to ``size`` x ``size``."""
    w, h = img.size
    if center_crop and w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), _RESAMPLE, reducing_gap=3.0)
    return img


def image_to_array(img: Image.Image, size: int, channels: int, center_crop: bool) -> np.ndarray:
    """A PIL image to a uint8 array of shape (size, size, channels); an image over the decode
    budget is refused (``ImageTooLargeError``) before it is decoded."""
    check_decode_budget(img)
    arr = np.asarray(crop_resize(to_mode(img, channels), size, center_crop), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def uint8_to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC [0, 255] -> float NCHW [-1, 1]. The only place inputs are scaled."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float NCHW [-1, 1] -> uint8 NHWC [0, 255], clipped and rounded."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8).permute(0, 2, 3, 1)


def array_to_image(arr: np.ndarray) -> Image.Image:
    """uint8 HWC (C = 1 or 3) to a PIL image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")
