"""``facediff data align``: photos in, aligned face crops out. A stub detector (faces placed
by the test, chosen by the photo's width) for the exact cases: numbering, too small, no face,
unreadable, resume, settings mismatch; the real detector (the faces extra) on faces the bundled
model draws, in one process and in two."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.cli import main
from facediff.config import DataConfig
from facediff.data.align import MANIFEST, PROGRESS, REPORT, output_stems
from facediff.errors import FacediffError
from facediff.faces import Face
from facediff.faces import detect as detect_module
from facediff.faces.templates import MEAN_FACE

HAVE_YUFACE = importlib.util.find_spec("yuface") is not None
needs_detector = pytest.mark.skipif(not HAVE_YUFACE, reason="the faces extra is not installed")
FAST = ["--workers", "1", "--no-progress", "-q"]


def _face(cx: float, cy: float, scale: float) -> Face:
    """A face with the mean CelebA landmarks, ``scale`` times their size, centred at (cx, cy)."""
    lm = (MEAN_FACE - MEAN_FACE.mean(0)) * scale + np.array([cx, cy])
    pad = 25 * scale
    box = (lm[:, 0].min() - pad, lm[:, 1].min() - pad, lm[:, 0].max() + pad, lm[:, 1].max() + pad)
    return Face(tuple(float(v) for v in box), 0.99, lm)  # type: ignore[arg-type]


# photo width -> the faces the stub finds in it (the ffhq crop of a scale-1 face is ~157 px)
FACES = {
    400: [_face(300, 150, 1.2), _face(100, 150, 1.0)],  # two; given right first, larger right
    401: [_face(200, 150, 0.15)],  # too small for a 64 px crop (~23 px: 2.7x)
    402: [],  # none
    403: [_face(100, 150, 1.0), _face(300, 150, 0.15)],  # one usable, one too small
    404: [_face(200, 150, 1.0)],  # one
}


@pytest.fixture
def stub(monkeypatch):
    """The stub in place of yuface; ``stub.calls`` counts the photos it searched."""
    def detect(rgb: np.ndarray) -> list[Face]:
        detect.calls += 1
        return list(FACES[rgb.shape[1]])

    detect.calls = 0
    monkeypatch.setitem(detect_module._loaded, "yuface", detect)
    return detect


def _photo(path: Path, width: int, colour=None) -> Path:
    """A photo the stub recognises by its width: left half red, right half blue."""
    img = Image.new("RGB", (width, 300), (0, 0, 200))
    img.paste((200, 0, 0) if colour is None else colour, (0, 0, width // 2, 300))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _colour(path: Path) -> str:
    r, _, b = np.asarray(Image.open(path).convert("RGB"), float).mean((0, 1))
    return "red" if r > 2 * b else "blue" if b > 2 * r else "mixed"


def _pngs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def _report(dst: Path) -> dict[str, dict[str, str]]:
    with open(dst / REPORT, newline="") as f:
        return {r["photo"]: r for r in csv.DictReader(f)}


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ---- the stub detector ----------------------------------------------------------------------
def test_every_face_is_numbered_left_to_right(stub, tmp_path: Path):
    _photo(tmp_path / "src" / "a" / "b" / "two.jpg", 400)
    dst = tmp_path / "all"
    assert main(["data", "align", str(tmp_path / "src"), "--out", str(dst), "--size", "64",
                 "--all-faces", *FAST]) == 0
    assert _pngs(dst) == ["a/b/two_1.png", "a/b/two_2.png"]
    assert _colour(dst / "a/b/two_1.png") == "red"  # the left face, over the red half
    assert _colour(dst / "a/b/two_2.png") == "blue"
    assert Image.open(dst / "a/b/two_1.png").size == (64, 64)
    # without --all-faces: the largest face (the right one), named like the photo
    one = tmp_path / "one"
    assert main(["data", "align", str(tmp_path / "src"), "--out", str(one), "--size", "64",
                 *FAST]) == 0
    assert _pngs(one) == ["a/b/two.png"]
    assert _colour(one / "a/b/two.png") == "blue"


def test_photos_without_a_crop_are_counted_and_reported(stub, tmp_path: Path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _photo(src / "two.png", 400)
    _photo(src / "x" / "small.png", 401)
    _photo(src / "none.png", 402)
    _photo(src / "mixed.png", 403)
    (src / "bad.jpg").write_bytes(b"not a jpeg")
    (src / "notes.txt").write_text("not a photo")
    assert main(["data", "align", str(src), "--out", str(dst), "--size", "64", "--all-faces",
                 "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"5 photos in {src} -> 3 face crops (ffhq template, 64 px, detector yuface, " \
           "every face)" in out
    assert "no face in 1, 2 faces too small, 1 unreadable." in out
    assert "5 done in this run" in out and "s per photo" in out and str(dst / REPORT) in out
    assert out.strip().endswith(f"Train on it with `facediff train --data {dst}`.")
    assert _pngs(dst) == ["mixed_1.png", "two_1.png", "two_2.png"]
    report = _report(dst)
    assert sorted(report) == ["bad.jpg", "mixed.png", "none.png", "x/small.png"]
    assert report["none.png"]["reason"] == "no face"
    assert report["x/small.png"]["reason"] == "too small"
    assert report["x/small.png"]["crops_written"] == "0"
    assert "enlarged 2.7x (at most 2x)" in report["x/small.png"]["detail"]
    assert report["mixed.png"]["reason"] == "too small"  # face 2 only; face 1 was written
    assert (report["mixed.png"]["faces_found"], report["mixed.png"]["crops_written"]) == ("2", "1")
    assert "face 2:" in report["mixed.png"]["detail"]
    assert report["bad.jpg"]["reason"] == "unreadable"
    assert "cannot read photo" in report["bad.jpg"]["detail"]
    manifest = json.loads((dst / MANIFEST).read_text())
    assert (manifest["template"], manifest["size"], manifest["detector"],
            manifest["all_faces"]) == ("ffhq", 64, "yuface", True)
    assert not list(dst.rglob("*.tmp"))


def test_the_crops_are_a_folder_to_train_on(stub, tmp_path: Path):
    from facediff.data.sources import detect_source, load_records

    src, dst = tmp_path / "src", tmp_path / "dst"
    _photo(src / "p" / "one.png", 404)
    _photo(src / "two.jpg", 400)
    _photo(src / "none.png", 402)  # a report row
    assert main(["data", "align", str(src), "--out", str(dst), "--size", "32", *FAST]) == 0
    assert {MANIFEST, PROGRESS, REPORT} <= {p.name for p in dst.iterdir()}
    assert detect_source(str(dst)) == "folder"
    records = load_records(DataConfig(path=str(dst)))
    assert sorted(records.keys) == ["p/one.png", "two.png"]
    assert records.kind == "folder" and records.open_image(0).size == (32, 32)


def test_a_rerun_does_only_what_is_not_done(stub, tmp_path: Path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _photo(src / "two.png", 400)
    _photo(src / "one.png", 404)
    _photo(src / "none.png", 402)
    (src / "bad.png").write_bytes(b"broken")
    args = ["data", "align", str(src), "--out", str(dst), "--size", "64", "--all-faces", *FAST]
    assert main(args) == 0
    assert stub.calls == 3  # the unreadable photo never reaches the detector
    first = {n: (dst / n).read_bytes() for n in _pngs(dst)}
    assert sorted(first) == ["one_1.png", "two_1.png", "two_2.png"]
    capsys.readouterr()

    assert main(args[:-1]) == 0  # done photos, failed ones included, are not searched again
    assert stub.calls == 3
    assert "Nothing to do" in capsys.readouterr().out
    assert {n: (dst / n).read_bytes() for n in _pngs(dst)} == first
    assert sorted(_report(dst)) == ["bad.png", "none.png"]

    (dst / "one_1.png").unlink()  # a crop gone: its photo is redone
    _photo(src / "new.png", 404)  # a new photo
    with open(dst / PROGRESS, "a") as f:  # the torn last line of a crash
        f.write('{"photo": "on')
    assert main(args) == 0
    assert stub.calls == 5
    assert _pngs(dst) == ["new_1.png", "one_1.png", "two_1.png", "two_2.png"]
    out = capsys.readouterr().out
    assert "2 done in this run" in out and "3 by an earlier one" in out

    # a photo changed since (now one face): redone, and its stale second crop removed
    _photo(src / "two.png", 404, colour=(0, 200, 0))
    assert main(args) == 0
    assert stub.calls == 6
    assert _pngs(dst) == ["new_1.png", "one_1.png", "two_1.png"]


def test_a_rerun_with_other_settings_is_refused(stub, tmp_path: Path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _photo(src / "one.png", 404)
    assert main(["data", "align", str(src), "--out", str(dst), "--size", "64", *FAST]) == 0
    before = _pngs(dst)
    assert main(["data", "align", str(src), "--out", str(dst), "--size", "32", *FAST]) == 2
    err = _error(capsys)
    assert err.startswith(f"facediff: error: --out {dst} holds crops made with other settings")
    assert "size 64 (now 32)" in err
    assert main(["data", "align", str(src), "--out", str(dst), "--size", "64", "--template",
                 "celeba", "--all-faces", *FAST]) == 2
    err = _error(capsys)
    assert "template ffhq (now celeba)" in err and "all_faces False (now True)" in err
    assert _pngs(dst) == before and stub.calls == 1


def test_bad_folders_are_one_line_errors(stub, tmp_path: Path, capsys):
    src = tmp_path / "src"
    assert main(["data", "align", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                 *FAST]) == 2
    assert _error(capsys) == f"facediff: error: photo folder not found: {tmp_path / 'missing'}"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "readme.txt").write_text("no photos here")
    assert main(["data", "align", str(src), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert _error(capsys).startswith(f"facediff: error: no images in {src}")
    assert not (tmp_path / "o").exists()  # nothing made for a run that could not start
    _photo(src / "one.png", 404)
    assert main(["data", "align", str(src), "--out", str(src), *FAST]) == 2
    assert "is the photo folder itself" in _error(capsys)
    assert main(["data", "align", str(src / "docs"), "--out", str(src), *FAST]) == 2
    assert "is inside --out" in _error(capsys)
    foreign = tmp_path / "foreign"
    _photo(foreign / "mine.png", 404)  # images that `data align` did not make
    assert main(["data", "align", str(src), "--out", str(foreign), *FAST]) == 2
    assert f"no {MANIFEST}" in _error(capsys)
    assert stub.calls == 0


def test_no_detector_installed_says_how_to_get_one(monkeypatch, tmp_path: Path, capsys):
    def missing():
        raise ImportError("not installed")

    monkeypatch.setattr(detect_module, "_BACKENDS", {"yuface": missing, "dlib": missing})
    monkeypatch.setattr(detect_module, "_loaded", {})
    _photo(tmp_path / "src" / "one.png", 404)
    assert main(["data", "align", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                 *FAST]) == 2
    assert _error(capsys) == ("facediff: error: aligning faces needs a detector, and no face "
                              "detector is installed: pip install 'facediff[faces]'")
    assert main(["data", "align", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                 "--detector", "dlib", *FAST]) == 2
    assert "dlib is not installed" in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_an_output_folder_inside_the_photos_is_not_walked(stub, tmp_path: Path, capsys):
    src = tmp_path / "src"
    dst = src / "aligned"
    _photo(src / "one.png", 404)
    _photo(src / "sub" / "two.png", 400)
    args = ["data", "align", str(src), "--out", str(dst), "--size", "64", *FAST]
    assert main(args) == 0
    assert _pngs(dst) == ["one.png", "sub/two.png"]
    capsys.readouterr()
    assert main(args[:-1]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 photos in {src}") and "Nothing to do" in out
    assert _pngs(dst) == ["one.png", "sub/two.png"] and stub.calls == 2
    # only the crops there: that is an error, not an empty run
    only = tmp_path / "only"
    _photo(only / "out" / "x.png", 404)
    (only / "out" / MANIFEST).write_text("{}")
    assert main(["data", "align", str(only), "--out", str(only / "out"), *FAST]) == 2
    assert "no photos in" in _error(capsys)


def test_photos_that_would_share_a_crop_name_keep_their_extension(stub, tmp_path: Path):
    assert output_stems(["a/p.jpg", "a/P.png", "b/p.jpg", "q.webp"]) == {
        "a/p.jpg": "a/p.jpg", "a/P.png": "a/P.png", "b/p.jpg": "b/p", "q.webp": "q"}
    with pytest.raises(FacediffError, match="same crop name"):
        output_stems(["p.jpg", "p.png", "p.jpg.png"])
    src, dst = tmp_path / "src", tmp_path / "dst"
    _photo(src / "p.jpg", 404)
    _photo(src / "p.png", 404)
    assert main(["data", "align", str(src), "--out", str(dst), "--size", "32", *FAST]) == 0
    assert _pngs(dst) == ["p.jpg.png", "p.png.png"]


# ---- the real detector ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def drawn_faces() -> list[Image.Image]:
    """Two faces the bundled 32 px model draws, enlarged to 160 px (yuface finds them)."""
    import facediff

    model = facediff.load("celebahq-32", device="cpu")
    return [f.resize((160, 160), Image.Resampling.BICUBIC)
            for f in model.sample(n=2, steps=8, seed=0)]


def _in_photo(face: Image.Image, at: tuple[int, int]) -> Image.Image:
    photo = Image.new("RGB", (420, 300), (90, 110, 140))
    photo.paste(face, at)
    return photo


@needs_detector
def test_real_faces_in_one_process_and_in_two(drawn_faces, tmp_path: Path):
    """Each drawn face, pasted off-centre, comes back as its ffhq crop (the bundled model
    draws ffhq-aligned faces: the crop is close to the face itself, closer than to the other
    face); two worker processes give the same crops, byte for byte."""
    src = tmp_path / "src"
    src.mkdir()
    for i, face in enumerate(drawn_faces):
        _in_photo(face, (30 + 200 * i, 70)).save(src / f"f{i}.jpg", quality=95)
    Image.new("RGB", (420, 300), (128, 128, 128)).save(src / "wall.png")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["data", "align", str(src), "--out", str(one), *FAST]) == 0
    assert _pngs(one) == ["f0.png", "f1.png"]
    assert sorted(_report(one)) == ["wall.png"]
    crops = [np.asarray(Image.open(one / f"f{i}.png"), float) for i in range(2)]
    assert crops[0].shape == (128, 128, 3)
    own = [np.asarray(f.resize((128, 128), Image.Resampling.BICUBIC), float)
           for f in drawn_faces]
    for i in range(2):
        assert np.abs(crops[i] - own[i]).mean() < np.abs(crops[i] - own[1 - i]).mean()
    assert main(["data", "align", str(src), "--out", str(two), "--workers", "2",
                 "--no-progress", "-q"]) == 0
    assert _pngs(two) == _pngs(one)
    for name in _pngs(one):
        assert (two / name).read_bytes() == (one / name).read_bytes()
    assert json.loads((two / MANIFEST).read_text())["detector"] == "yuface"
    assert os.path.getsize(two / PROGRESS) > 0
