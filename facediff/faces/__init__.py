"""Faces in photos: find them (``detect``), the crop a model was trained on (``templates``),
align a face to it and paste an edited crop back (``align``), a photo in (``photo``)."""

from facediff.faces.align import Aligned, align_face, centre_crop, paste_back
from facediff.faces.detect import Face, FaceNotFoundError, detect_faces, get_detector, pick_face
from facediff.faces.photo import face_crop, open_photo
from facediff.faces.templates import TEMPLATES, Template, get_template, model_template

__all__ = ["TEMPLATES", "Aligned", "Face", "FaceNotFoundError", "Template", "align_face",
           "centre_crop", "detect_faces", "face_crop", "get_detector", "get_template",
           "model_template", "open_photo", "paste_back", "pick_face"]
