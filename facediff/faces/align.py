"""Align a face to a model's crop by a similarity transform, and paste an edited crop back.

The transforms are 2 x 3 affine matrices (``facediff.faces.geometry``); Pillow's
``Image.transform`` does the resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from facediff.faces.detect import Face
from facediff.faces.geometry import apply, compose, invert, scale, shift
from facediff.faces.templates import Template

_RESAMPLE = Image.Resampling.BICUBIC
# Pillow's affine resampling does not low-pass: a face much larger than the crop is first
# shrunk by box averaging (Image.reduce) to at most this many photo pixels per crop pixel
_MAX_STRIDE = 1.5


@dataclass
class Aligned:
    """A face's crop and where it came from: ``matrix`` maps photo pixels to crop pixels."""

    image: Image.Image
    matrix: np.ndarray
    face: Face | None = None
    index: int = 0  # the face's number in the photo, from 1 (0: not detected)

    @property
    def size(self) -> int:
        return self.image.width


def warp_to_crop(photo: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """The ``size`` x ``size`` crop that ``matrix`` (photo px -> crop px) cuts from ``photo``.

    Only the part of the photo under the crop is touched (a huge photo costs what its face
    costs); where the crop reaches past the photo's edge the photo is mirrored, as FFHQ's
    alignment pads, so a face at the border does not get black corners.
    """
    back = invert(matrix)  # crop px -> photo px
    corners = apply(back, np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    lo = np.floor(corners.min(0)).astype(int) - 2
    hi = np.ceil(corners.max(0)).astype(int) + 2
    inside_lo, inside_hi = np.maximum(lo, 0), np.minimum(hi, photo.size)
    if (inside_hi <= inside_lo).any():  # the crop misses the photo altogether
        inside_lo, inside_hi = np.zeros(2, int), np.array(photo.size)
    region = photo.crop((*inside_lo, *inside_hi))
    offset = inside_lo.astype(float)  # the region's origin in photo px
    stride = float(np.sqrt(abs(np.linalg.det(back[:, :2]))))  # photo px per crop px
    shrink = math.ceil(stride / _MAX_STRIDE)
    k = 1.0
    if shrink >= 2:
        region = region.reduce(shrink)
        k = 1.0 / shrink
    pad_lo = np.maximum(np.ceil((offset - lo) * k).astype(int), 0)
    pad_hi = np.maximum(np.ceil((hi - inside_hi) * k).astype(int), 0)
    if pad_lo.any() or pad_hi.any():
        arr = np.asarray(region)
        widths = [(pad_lo[1], pad_hi[1]), (pad_lo[0], pad_hi[0])] + [(0, 0)] * (arr.ndim - 2)
        region = Image.fromarray(np.pad(arr, widths, mode="symmetric"))
    # crop px -> region px: photo px, less the region's origin, scaled, plus the padding
    to_region = compose(shift(*pad_lo), compose(scale(k), compose(shift(*-offset), back)))
    return region.transform((size, size), Image.Transform.AFFINE, to_region.ravel().tolist(),
                            resample=_RESAMPLE)


def align_face(photo: Image.Image, face: Face, template: Template, size: int, *,
               index: int = 0) -> Aligned:
    """``face`` cut from ``photo`` as the model's ``size`` x ``size`` crop."""
    m = compose(scale(size), template.matrix(face.landmarks))
    return Aligned(warp_to_crop(photo, m, size), m, face, index)


def centre_crop(photo: Image.Image, size: int) -> Aligned:
    """The centred square of the photo, resized (what ``--no-align`` uses)."""
    side = min(photo.size)
    left, top = (photo.width - side) / 2, (photo.height - side) / 2
    m = compose(scale(size / side), shift(-left, -top))
    return Aligned(warp_to_crop(photo, m, size), m)


def feather_mask(size: int, feather: float = 0.12) -> Image.Image:
    """An L mask over a ``size`` crop: 255 inside, falling smoothly to 0 over the outer
    ``feather`` of each side, and 0 on the crop's edge."""
    margin = max(1, round(feather * size))
    big = 4 * size  # drawn large and shrunk, so the blur is smooth at small sizes
    m = Image.new("L", (big, big), 0)
    inner = 4 * margin
    m.paste(255, (inner, inner, big - inner, big - inner))
    m = m.filter(ImageFilter.GaussianBlur(inner / 2.5)).resize((size, size),
                                                               Image.Resampling.BILINEAR)
    arr = np.asarray(m).copy()
    arr[[0, -1], :] = 0
    arr[:, [0, -1]] = 0
    return Image.fromarray(arr)


def paste_back(photo: Image.Image, aligned: Aligned, edited: Image.Image,
               feather: float = 0.12) -> tuple[Image.Image, Image.Image]:
    """(the photo with ``edited`` (a crop like ``aligned.image``) blended in where the crop
    was cut, through a feathered mask; that mask in photo pixels). Pixels outside the mask
    are the photo's own, unchanged."""
    size = aligned.size
    if edited.size != (size, size):
        edited = edited.resize((size, size), Image.Resampling.LANCZOS)
    back = invert(aligned.matrix)
    corners = apply(back, np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    lo = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, photo.size)
    out = photo.copy()
    mask_full = Image.new("L", photo.size, 0)
    if (hi <= lo).any():
        return out, mask_full
    box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
    w, h = box[2] - box[0], box[3] - box[1]
    # region px -> crop px: Pillow's transform wants output (region) -> input (crop)
    to_crop = compose(aligned.matrix, shift(*lo.astype(float))).ravel().tolist()
    face = edited.convert(photo.mode).transform((w, h), Image.Transform.AFFINE, to_crop,
                                                resample=_RESAMPLE)
    mask = feather_mask(size, feather).transform((w, h), Image.Transform.AFFINE, to_crop,
                                                 resample=Image.Resampling.BILINEAR)
    out.paste(Image.composite(face, photo.crop(box), mask), box[:2])
    mask_full.paste(mask, box[:2])
    return out, mask_full
