"""Faces in photos: the alignment maths, warping onto the template, pasting back, picking a
face, opening awkward photos, and (with the faces extra) the real detector on a face the
bundled model draws, pasted rotated and off-centre into a larger photo."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from facediff.cli import main
from facediff.errors import FacediffError
from facediff.faces import (
    Face,
    FaceNotFoundError,
    align_face,
    detect_faces,
    face_crop,
    get_template,
    open_photo,
    paste_back,
    pick_face,
)
from facediff.faces import detect as detect_module
from facediff.faces.geometry import apply, fit_similarity, invert
from facediff.faces.templates import MEAN_FACE, celeba_template

HAVE_YUFACE = importlib.util.find_spec("yuface") is not None
needs_detector = pytest.mark.skipif(not HAVE_YUFACE, reason="the faces extra is not installed")


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([r, np.array(shift, float)[:, None]], axis=1)


def test_fit_similarity_recovers_a_known_transform():
    m = _similarity(-33.0, 2.7, (310.0, -45.0))
    src = MEAN_FACE
    fit = fit_similarity(src, apply(m, src))
    np.testing.assert_allclose(fit, m, atol=1e-9)
    np.testing.assert_allclose(apply(invert(fit), apply(m, src)), src, atol=1e-9)
    # noisy points: the least-squares fit is still close, never a reflection
    rng = np.random.default_rng(0)
    noisy = fit_similarity(src, apply(m, src) + rng.normal(0, 0.5, src.shape))
    assert np.linalg.det(noisy[:, :2]) > 0
    np.testing.assert_allclose(noisy, m, atol=0.05 * 2.7 * 10)


def _dots(size: tuple[int, int], points: np.ndarray) -> Image.Image:
    """A dark photo with a small bright disc at each point."""
    img = Image.new("RGB", size, (20, 20, 20))
    d = ImageDraw.Draw(img)
    for x, y in points:
        d.ellipse((x - 5, y - 5, x + 5, y + 5), fill=(255, 255, 255))
    return img


def _centroid(crop: Image.Image, near: np.ndarray, r: int = 5) -> np.ndarray:
    a = np.asarray(crop.convert("L"), float) - 20
    x0, y0 = (np.round(near) - r).astype(int)
    w = np.clip(a[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1], 0, None)
    ys, xs = np.mgrid[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1]
    assert w.sum() > 0, "no dot near where the template puts it"
    # pixel i spans [i, i + 1): its centre is i + 0.5
    return np.array([(w * (xs + 0.5)).sum(), (w * (ys + 0.5)).sum()]) / w.sum()


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (27.0, 2.5), (-40.0, 0.9)])
def test_alignment_puts_the_landmarks_on_the_template(angle, scale):
    """A 'face' of five dots where the mean CelebA face has its landmarks, turned, scaled and
    moved into a larger photo: aligned at 128 px, each dot lands within 0.5 px of the
    template point."""
    m = _similarity(angle, scale, (520.0, 140.0))
    landmarks = apply(m, MEAN_FACE - MEAN_FACE.mean(0))
    photo = _dots((1000, 700), landmarks)
    template = celeba_template(140)
    size = 128
    aligned = align_face(photo, Face((0, 0, 1, 1), 1.0, landmarks), template, size)
    for want in template.points * size:
        np.testing.assert_allclose(_centroid(aligned.image, want), want, atol=0.5)


def test_ffhq_template_follows_the_face_and_keeps_it_square():
    template = get_template("ffhq")
    upright = np.array([[40.0, 50.0], [80.0, 50.0], [60.0, 75.0], [45.0, 95.0], [75.0, 95.0]])
    m0 = template.matrix(upright)
    # eye-to-mouth (45) * 1.8 * 2 = 162 > eye distance (40) * 2 * 2: the crop's side is 162 px,
    # centred a tenth of the way from the eyes to the mouth
    np.testing.assert_allclose(1 / np.hypot(*m0[0, :2]), 162.0)
    np.testing.assert_allclose(apply(m0, [[60.0, 54.5]]), [[0.5, 0.5]], atol=1e-9)
    turned = _similarity(30.0, 1.7, (200.0, 10.0))
    m1 = template.matrix(apply(turned, upright))
    # the same face turned and scaled gives the same crop
    np.testing.assert_allclose(apply(m1, apply(turned, upright)), apply(m0, upright),
                               atol=1e-9)


def test_paste_back_changes_only_the_masked_pixels():
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    landmarks = apply(_similarity(20.0, 1.2, (250.0, 150.0)), MEAN_FACE - MEAN_FACE.mean(0))
    aligned = align_face(photo, Face((0, 0, 1, 1), 1.0, landmarks), celeba_template(140), 64)
    edited = Image.new("RGB", (64, 64), (255, 0, 0))
    out, mask = paste_back(photo, aligned, edited)
    a, b, m = np.asarray(out), np.asarray(photo), np.asarray(mask)
    assert out.size == photo.size and (m > 0).sum() > 2000
    np.testing.assert_array_equal(a[m == 0], b[m == 0])
    full = m == 255  # the middle of the face is the edit's own pixels
    assert full.sum() > 500
    assert (np.abs(a[full].astype(int) - [255, 0, 0]) <= 2).all()
    # the mask is feathered: it has values between 0 and 255
    assert ((m > 0) & (m < 255)).sum() > 0.2 * (m > 0).sum()


def test_pick_face_says_what_is_wrong():
    small = Face((10, 10, 40, 40), 0.9, MEAN_FACE / 6)
    big = Face((100, 10, 220, 130), 0.9, MEAN_FACE)
    assert pick_face([small, big]) == (2, big)
    assert pick_face([small, big], 1) == (1, small)
    with pytest.raises(FaceNotFoundError, match=r"no face found in me\.jpg"):
        pick_face([], where="me.jpg")
    with pytest.raises(FaceNotFoundError, match="--face 3: the photo has 2 face"):
        pick_face([small, big], 3)


def test_a_face_too_small_for_the_crop_is_refused(monkeypatch):
    tiny = MEAN_FACE / 10 + 50  # eyes 4 px apart
    monkeypatch.setitem(detect_module._loaded, "yuface",
                        lambda rgb: [Face((50, 50, 70, 70), 0.9, tiny)])
    photo = Image.new("RGB", (200, 200))
    with pytest.raises(FaceNotFoundError, match="too small for a 64 px crop"):
        face_crop(photo, celeba_template(140), 64, detector="yuface")
    with pytest.raises(FacediffError, match="--face picks a detected face"):
        face_crop(photo, None, 64, face=1)


def test_open_photo_turns_by_exif_and_converts_cmyk(tmp_path: Path):
    img = Image.new("RGB", (60, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "turned.jpg"
    img.save(p, exif=exif)
    assert open_photo(p).size == (40, 60)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 20), (0, 200, 200, 0)).save(cmyk)
    out = open_photo(cmyk)
    assert out.mode == "RGB" and out.size == (30, 20)
    with pytest.raises(FacediffError, match="cannot read photo"):
        (tmp_path / "x.jpg").write_bytes(b"not a photo")
        open_photo(tmp_path / "x.jpg")
    with pytest.raises(FacediffError, match="photo not found"):
        open_photo(tmp_path / "missing.jpg")


def test_no_detector_installed_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(detect_module, "_loaded", {})

    def missing() -> None:
        raise ImportError("no")

    monkeypatch.setattr(detect_module, "_BACKENDS", {"yuface": missing, "dlib": missing})
    with pytest.raises(FacediffError, match=r"pip install 'facediff\[faces\]'.*--no-align"):
        detect_faces(Image.new("RGB", (10, 10)))


# ---- the real detector ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def drawn_face() -> Image.Image:
    """A face the bundled 32 px model draws, enlarged to 160 px (yuface finds it)."""
    import facediff

    model = facediff.load("celebahq-32", device="cpu")
    return model.sample(n=1, steps=8, seed=0)[0].resize((160, 160), Image.Resampling.BICUBIC)


def _in_canvas(face: Image.Image, angle: float, at: tuple[int, int]) -> Image.Image:
    turned = face.resize((320, 320), Image.Resampling.BICUBIC).rotate(
        angle, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    canvas = Image.new("RGB", (1100, 700), (90, 110, 140))
    canvas.paste(turned, at)
    return canvas


@needs_detector
def test_real_detector_aligns_a_turned_off_centre_face(drawn_face):
    """The face pasted turned by 30 degrees near a corner of a larger photo: aligned to the
    CelebA crop at 64 px, the eyes found again in the crop (enlarged 4x) lie within 3 px (of
    64) of the template's eyes."""
    canvas = _in_canvas(drawn_face, 30.0, (700, 250))
    faces = detect_faces(canvas)
    assert len(faces) == 1 and faces[0].box[0] > 650
    template = celeba_template(140)
    aligned = face_crop(canvas, template, 64)
    again = detect_faces(aligned.image.resize((256, 256), Image.Resampling.BICUBIC))
    assert len(again) == 1
    eyes = again[0].landmarks[:2] / 4
    np.testing.assert_allclose(eyes, template.points[:2] * 64, atol=3.0)


@needs_detector
def test_edit_pastes_the_edited_face_back_into_the_photo(drawn_face, tmp_path: Path):
    canvas = _in_canvas(drawn_face, -20.0, (60, 40))
    photo = tmp_path / "group.jpg"
    canvas.save(photo, quality=95)
    out = tmp_path / "edited.png"
    assert main(["edit", str(photo), "--attr", "Smiling=1", "--steps", "3", "-q",
                 "--out", str(out)]) == 0
    edited = np.asarray(Image.open(out))
    original = np.asarray(open_photo(photo))
    assert edited.shape == original.shape
    # far from the face (the right half of the photo), nothing changed; at the face, it did
    np.testing.assert_array_equal(edited[:, 600:], original[:, 600:])
    assert np.abs(edited[100:300, 100:400].astype(int) - original[100:300, 100:400]).mean() > 1
    crops = Image.open(tmp_path / "edited-crops.png")
    assert crops.size == (2 * 32 + 3 * 2, 32 + 2 * 2)


@needs_detector
def test_edit_of_a_photo_without_a_face_is_one_line(tmp_path: Path, capsys):
    photo = tmp_path / "wall.png"
    Image.new("RGB", (300, 200), (150, 150, 150)).save(photo)
    out = tmp_path / "e.png"
    assert main(["edit", str(photo), "--attr", "Smiling=1", "-q", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"facediff: error: no face found in {photo} (or pass --no-align to use "
                   "the centre crop)"]
    assert not out.exists()
    # the centre crop still edits it
    assert main(["edit", str(photo), "--attr", "Smiling=1", "--steps", "2", "-q",
                 "--no-align", "--out", str(out)]) == 0
    assert Image.open(out).size == (300, 200)



def test_a_trained_model_records_its_template(faces_dir: Path, tmp_path: Path):
    from facediff.config import DataConfig
    from facediff.faces.templates import template_name
    from facediff.train.trainer import Trainer
    from tests.conftest import tiny_config
    from tests.test_sources_misc import make_celeba

    folder = Trainer(tiny_config(faces_dir), tmp_path / "a", progress=False)
    assert folder.cfg.data.face_template == "ffhq"
    celeba = make_celeba(tmp_path / "celeba")
    run = Trainer(tiny_config(celeba), tmp_path / "b", progress=False)
    assert run.cfg.data.face_template == "celeba"
    # a model that did not record it: CelebA attribute conditions mean the CelebA crop
    assert template_name(DataConfig(), condition_names=("Smiling", "Male")) == "celeba"
    assert template_name(DataConfig(), condition_names=("race",)) == "ffhq"
    assert template_name(DataConfig(face_template="celeba")) == "celeba"


def test_the_dlib_fallback_gives_five_landmarks_in_yuface_convention():
    """dlib's eye centres and nose base become the mean face's five points, moved with the
    face (turned, scaled, shifted)."""
    from facediff.faces.detect import _with_mouth
    from facediff.faces.templates import DLIB_MEAN

    np.testing.assert_allclose(_with_mouth(*DLIB_MEAN), MEAN_FACE, atol=1e-9)
    m = _similarity(15.0, 3.0, (40.0, -7.0))
    np.testing.assert_allclose(_with_mouth(*apply(m, DLIB_MEAN)), apply(m, MEAN_FACE),
                               atol=1e-9)


def test_the_celebahq_template_gives_back_a_celebahq_crop():
    """A face whose landmarks sit where celebahq-128's mean face has them is cut out as the
    whole 128 px image (identity), at any size."""
    from facediff.faces.templates import CELEBAHQ_FACE

    m = get_template("celebahq").matrix(CELEBAHQ_FACE)
    np.testing.assert_allclose(m, [[1 / 128, 0, 0], [0, 1 / 128, 0]], atol=1e-12)
    with pytest.raises(FacediffError, match="choose from celeba, celebahq, ffhq"):
        get_template("ffhq-ish")
