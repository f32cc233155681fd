"""A photo in, the model's crop of its face out: open (EXIF rotation, any mode, the decode
budget), find the face, align it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from facediff.errors import FacediffError
from facediff.faces.align import Aligned, align_face, centre_crop
from facediff.faces.detect import Detector, FaceNotFoundError, detect_faces, pick_face
from facediff.faces.templates import Template

# a face whose crop would be enlarged more than this from the photo's pixels is refused as too
# small: the crop would be a blur
MAX_UPSCALE = 2.0


def open_photo(path: str | Path) -> Image.Image:
    """An RGB photo, turned upright by its EXIF orientation; a missing file, a non-image, a
    broken or over-budget image is a ``FacediffError`` naming the file and the reason."""
    from facediff.data.transforms import DECODE_ERRORS, check_decode_budget, to_mode

    p = Path(path)
    if not p.is_file():
        raise FacediffError(f"photo not found: {p}")
    try:
        with warnings.catch_warnings():  # the budget says it in one line, not Pillow
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                check_decode_budget(img)  # from the header, before anything is decoded
                img = ImageOps.exif_transpose(img)
                return to_mode(img, 3)
    except DECODE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FacediffError(f"cannot read photo {p}: {reason}") from e


def face_crop(photo: Image.Image, template: Template | None, size: int, *,
              face: int | None = None, detector: str | Detector = "auto",
              where: str = "the photo") -> Aligned:
    """The model's ``size`` crop of the photo's face (the largest, or number ``face`` from
    the left); ``template`` None: the centre crop. ``FaceNotFoundError`` if there is no face,
    no such face, or a face too small for the crop."""
    if template is None:
        if face is not None:
            raise FacediffError("--face picks a detected face; it needs alignment (drop "
                                "--no-align)")
        return centre_crop(photo, size)
    faces = detect_faces(photo, detector)
    k, found = pick_face(faces, face, where=where)
    m = template.matrix(found.landmarks)  # photo px -> unit crop
    crop_side = 1.0 / float(np.hypot(*m[0, :2]))  # the crop's side in photo px
    if size / crop_side > MAX_UPSCALE:
        raise FaceNotFoundError(
            f"the face in {where} is too small for a {size} px crop: its crop is "
            f"{crop_side:.0f} px of the photo, which would be enlarged "
            f"{size / crop_side:.1f}x (at most {MAX_UPSCALE:g}x)")
    return align_face(photo, found, template, size, index=k)
