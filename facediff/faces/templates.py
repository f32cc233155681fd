"""Where a model's training crop puts a face: the alignment templates.

A template turns a face's five landmarks into the similarity transform (rotation, uniform
scale, shift) from photo pixels to the model's crop, in unit coordinates ([0, 1]^2, x right,
y down; ``size`` x ``size`` pixels once scaled).

- ``celeba``: CelebA's aligned images (178 x 218) put the eyes, nose and mouth at fixed
  points; ``MEAN_FACE`` holds them (the mean of the ``yuface`` landmarks over the 6,000 photos
  of ``celeba-6k``, docs/faces.md). A CelebA-trained model sees the centred
  ``data.celeba_crop`` square of those images, so its template is the least-squares fit of the
  landmarks to the mean face as that square sees it.
- ``celebahq``: the close face crops of ``celebahq-128`` (the bundled and released celebahq
  models' data): ``CELEBAHQ_FACE``, the mean of yuface's landmarks over 2,000 of its training
  images (detected at 2x), fitted the same way. These crops are the centre 0.75 of the FFHQ
  rule's square, 0.1 of it lower (docs/faces.md); the mean face matches a held-out photo's
  crop a little better than that rule (corners within 6.3 px of 128 against 6.8, median,
  2,000 held-out photos detected at 2x; at 1x the rule with its sub-crop does slightly better).
- ``ffhq``: the FFHQ / CelebA-HQ procedure (Karras et al.; NVlabs/ffhq-dataset): a square
  centred a tenth of the way from the eyes to the mouth, oriented by the eye line and the
  eye-to-mouth line, of side the larger of 4x the eye distance and 3.6x the eye-to-mouth
  distance. The default for models trained on anything but CelebA, and for
  ``facediff data align``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facediff.config import DataConfig
from facediff.errors import FacediffError
from facediff.faces.geometry import fit_similarity

TEMPLATES = ("celeba", "celebahq", "ffhq")
CELEBA_SIZE = (178, 218)  # the aligned CelebA images MEAN_FACE is measured in
# left eye, right eye, nose tip, left and right mouth corners, in px of the 178 x 218 CelebA
# image: the mean of yuface's landmarks over celeba-6k (bench/faces.py template)
MEAN_FACE = np.array([[69.29, 112.49], [108.42, 112.82], [88.19, 135.11],
                      [72.18, 151.94], [105.12, 152.54]])
# the same five in px of celebahq-128's 128 x 128 crops: the mean over 2,000 of the training
# images (a seeded split's train part, every 9th), detected at 2x
CELEBAHQ_FACE = np.array([[44.14, 41.52], [83.78, 41.76], [63.24, 66.82], [46.56, 87.04],
                          [80.2, 87.29]])
CELEBAHQ_SIZE = 128
# the dlib fallback's three points on the same photos (the means of its eye corners and the
# base of its nose, 1,500 of the 6,000): it maps them onto MEAN_FACE, so its five landmarks
# follow yuface's convention (facediff.faces.detect)
DLIB_MEAN = np.array([[70.01, 113.51], [108.12, 113.49], [88.6, 143.27]])


def _rot90(v: np.ndarray) -> np.ndarray:
    """v turned a quarter turn clockwise on screen (y down): (a, b) -> (-b, a)."""
    return np.array([-v[1], v[0]])


@dataclass(frozen=True)
class Template:
    """``points``: where the five landmarks sit in the unit crop (a least-squares fit);
    None: the FFHQ rule."""

    name: str
    points: np.ndarray | None = None

    def matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """2 x 3 affine from photo pixels to the unit crop for a face's five landmarks."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if self.points is not None:
            return fit_similarity(lm, self.points)
        eye_avg, mouth_avg = lm[:2].mean(0), lm[3:].mean(0)
        eye_to_eye, eye_to_mouth = lm[1] - lm[0], mouth_avg - eye_avg
        x = eye_to_eye - _rot90(eye_to_mouth)
        half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
        x_unit = x / np.hypot(*x)
        c = eye_avg + eye_to_mouth * 0.1
        r = np.stack([x_unit, _rot90(x_unit)]) / (2 * half)  # rows: the crop's x and y axes
        return np.concatenate([r, (0.5 - r @ c)[:, None]], axis=1)


def celeba_template(celeba_crop: int) -> Template:
    """The CelebA template as a model trained with ``data.celeba_crop`` sees it (0: the
    whole image, centre-cropped to a square)."""
    from facediff.data.sources.celeba import celeba_crop_box

    box = celeba_crop_box(CELEBA_SIZE, celeba_crop)
    if box is None:  # the centred square of the whole 178 x 218 image
        side = min(CELEBA_SIZE)
        box = ((CELEBA_SIZE[0] - side) // 2, (CELEBA_SIZE[1] - side) // 2)
    else:
        side = box[2] - box[0]
    return Template("celeba", (MEAN_FACE - np.array(box[:2], float)) / side)


def get_template(name: str, celeba_crop: int = 140) -> Template:
    if name == "celeba":
        return celeba_template(celeba_crop)
    if name == "celebahq":
        return Template("celebahq", CELEBAHQ_FACE / CELEBAHQ_SIZE)
    if name == "ffhq":
        return Template("ffhq")
    raise FacediffError(f"unknown face template {name!r}; choose from {', '.join(TEMPLATES)}")


def template_name(data: DataConfig, kind: str | None = None, condition_names: tuple = ()) -> str:
    """The template a model's crop follows: ``data.face_template`` when recorded; else
    ``celeba`` for CelebA data (``kind``, or, for a model that did not record it, CelebA
    attribute conditions) and ``ffhq`` for anything else."""
    if data.face_template != "auto":
        return data.face_template
    if kind is None:
        from facediff.data.sources.celeba import CELEBA_ATTRIBUTES

        kind = "celeba" if condition_names and set(condition_names) <= CELEBA_ATTRIBUTES \
            else "folder"
    return "celeba" if kind == "celeba" else "ffhq"


def model_template(data: DataConfig, condition_names: tuple = ()) -> Template:
    """The template for a model's data config (see ``template_name``)."""
    return get_template(template_name(data, condition_names=condition_names), data.celeba_crop)
