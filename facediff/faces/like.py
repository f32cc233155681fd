"""Faces like a photo: the attribute classifier shipped with an attribute model reads the
photo's face (aligned to the model's crop), and those attributes (or a chosen subset) are what
new faces are generated with (``facediff sample --like``, the app's "faces like this photo")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.eval.classifier import TrainedClassifier
    from facediff.faces.align import Aligned


@dataclass(frozen=True)
class Reading:
    """One attribute as the classifier reads it: its value and the classifier's confidence."""

    name: str
    value: str
    confidence: float

    @property
    def request(self) -> str:
        return f"{self.name}={self.value}"

    def __str__(self) -> str:
        return f"{self.request} ({self.confidence:.2f})"


def model_classifier(model: FaceModel, path: str | Path | None = None) -> TrainedClassifier:
    """The classifier at ``path``, else the one shipped with ``model`` (``classifier/`` beside
    its weights, or its distillation teacher's); a ``FacediffError`` if it has none."""
    from facediff.assets import resolve_model
    from facediff.errors import ModelNotFoundError
    from facediff.eval.classifier import CLASSIFIER_DIR, load_classifier, shipped_classifier

    if path is not None:
        return load_classifier(path)
    found = shipped_classifier(model.path)
    teacher = model.config.distill.teacher
    if found is None and teacher:
        try:
            found = shipped_classifier(resolve_model(teacher))
        except ModelNotFoundError:
            pass
    if found is None:
        raise FacediffError(
            f"{model.source} ships no attribute classifier ({CLASSIFIER_DIR}/ beside its "
            "weights) to read the photo with: pass --classifier DIR (facediff classifier "
            "train), or train one into the model dir")
    return load_classifier(found)


def read_attributes(clf: TrainedClassifier, crop: torch.Tensor | np.ndarray,
                    names: Sequence[str]) -> list[Reading]:
    """The classifier's reading of one uint8 HWC face crop, for the conditions in ``names``
    (the model's) that it knows, in the classifier's order."""
    x = torch.from_numpy(np.array(crop, dtype=np.uint8))[None]
    probs = clf.model.probabilities(x)
    wanted = set(names)
    out = []
    for c, p in zip(clf.spec.conditions, probs, strict=True):
        if c.name in wanted:
            k = int(p[0].argmax())
            out.append(Reading(c.name, str(c.values[k]), float(p[0, k])))
    return out


# a reading the classifier is less sure of than this is left to the model (unspecified)
MIN_CONFIDENCE = 0.75


def keep_readings(readings: Sequence[Reading], keep: Sequence[str] | None = None,
                  min_confidence: float = MIN_CONFIDENCE) -> list[Reading]:
    """The readings to generate with: those named in ``keep`` (an unknown name is an error
    naming what the classifier read), else every one read with at least ``min_confidence``."""
    if keep is None:
        return [r for r in readings if r.confidence >= min_confidence]
    by_name = {r.name.lower(): r for r in readings}
    missing = [k for k in keep if k.lower() not in by_name]
    if missing:
        raise FacediffError(f"--keep {', '.join(missing)}: not read from the photo; the "
                            f"classifier reads {', '.join(r.name for r in readings)}")
    return [by_name[k.lower()] for k in keep]


def photo_attributes(photo: str | Path, model: FaceModel, clf: TrainedClassifier, *,
                     align: bool = True, face: int | None = None, detector: str = "auto",
                     where: str | None = None) -> tuple[list[Reading], Aligned]:
    """What the classifier reads on the photo's face (found and aligned to the model's crop
    at the classifier's own size), and that crop."""
    from facediff.faces import face_crop, model_template, open_photo

    img = open_photo(photo)
    template = model_template(model.config.data, tuple(model.spec.names)) if align else None
    size = clf.model.image_size or model.config.data.image_size
    aligned = face_crop(img, template, size, face=face, detector=detector,
                        where=where or str(photo))
    crop = np.asarray(aligned.image.convert("RGB" if clf.model.channels == 3 else "L"))
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return read_attributes(clf, crop, model.spec.names), aligned
