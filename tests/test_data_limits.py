"""The decode budget (MAX_DECODED_BYTES): images whose header claims too many pixels are skipped
in a dataset and refused by ``facediff edit``, before anything decodes them."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from facediff.cli import main
from facediff.data import transforms
from facediff.data.records import Records, decode_records
from facediff.data.transforms import MAX_DECODED_BYTES, decoded_bytes

# the patched headers below claim 100 and 400 megapixels: Pillow warns about the first
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 8x8 PNG whose IHDR chunk claims ``width`` x ``height`` (CRC recomputed): a few
    hundred bytes on disk, however large the header says the image is."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 40)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"  # after the 8-byte signature and the chunk's length
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _faces(root: Path, n: int, size: int = 20) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (40 * i, 90, 160)).save(root / f"ok{i}.png")


def test_the_budget_is_pillows_warning_threshold_in_rgb():
    assert MAX_DECODED_BYTES == 256 * 2**20
    assert MAX_DECODED_BYTES // 3 == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("mode, per_pixel", [
    ("1", 1), ("L", 1), ("P", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4), ("CMYK", 4),
    ("I;16", 2), ("I", 4), ("F", 4),
])
def test_decoded_bytes_counts_bands_and_sample_size(mode: str, per_pixel: int):
    assert decoded_bytes(Image.new(mode, (6, 5))) == 30 * per_pixel


def test_a_header_over_the_budget_or_a_bomb_is_skipped_with_its_reason(tmp_path: Path, caplog):
    _faces(tmp_path, 3)
    _png_claiming(tmp_path / "huge.png", 10_000, 10_000)  # 286 MiB RGB, under Pillow's limit
    _png_claiming(tmp_path / "bomb.png", 20_000, 20_000)  # over Pillow's limit
    assert (tmp_path / "huge.png").stat().st_size < 1000
    records = Records("folder", str(tmp_path), ["ok0.png", "huge.png", "ok1.png", "bomb.png",
                                                "ok2.png"],
                      lambda i: Image.open(tmp_path / records.keys[i]))
    data = decode_records(records, 16, progress=False)
    assert data.names == ["ok0.png", "ok1.png", "ok2.png"] and data.kept == [0, 2, 4]
    why = dict(data.skipped)
    assert why.keys() == {"huge.png", "bomb.png"}
    assert why["huge.png"] == ("10000x10000 RGB needs 286 MiB decoded, over the 256 MiB budget "
                               "for one image (facediff.data.transforms.MAX_DECODED_BYTES)")
    assert "decompression bomb" in why["bomb.png"]
    assert "skipped 2 of 5" in caplog.text and "huge.png (10000x10000 RGB" in caplog.text


def test_the_budget_is_checked_before_anything_decodes(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(transforms, "MAX_DECODED_BYTES", 64 * 64 * 3)  # 12 KiB
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (64, 64), (200, 10, 10, 255)).save(rgba)  # 16 KiB decoded: refused
    gray = tmp_path / "gray.png"
    Image.new("L", (64, 64), 128).save(gray)  # 4 KiB, its RGB copy exactly the budget: kept
    decoded: list[str] = []
    real_load = PngImagePlugin.PngImageFile.load

    def spy(self):
        decoded.append(Path(self.filename).name)
        return real_load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", spy)
    paths = [rgba, gray]
    records = Records("folder", str(tmp_path), ["rgba.png", "gray.png"],
                      lambda i: Image.open(paths[i]))
    data = decode_records(records, 16, progress=False)
    assert data.names == ["gray.png"] and set(decoded) == {"gray.png"}  # rgba.png: never
    assert data.skipped == [("rgba.png", "64x64 RGBA needs 16 KiB decoded, over the 12 KiB "
                             "budget for one image (facediff.data.transforms.MAX_DECODED_BYTES)")]


def test_a_grey_image_counts_its_rgb_copy(monkeypatch):
    monkeypatch.setattr(transforms, "MAX_DECODED_BYTES", 64 * 64 * 2)
    with pytest.raises(transforms.ImageTooLargeError, match="64x64 L needs 12 KiB"):
        transforms.check_decode_budget(Image.new("L", (64, 64)))


def test_inspect_reports_the_refused_image(tmp_path: Path, capsys):
    d = tmp_path / "faces"
    _faces(d, 2)
    _png_claiming(d / "huge.png", 10_000, 10_000)
    assert main(["data", "inspect", str(d), "--size", "16", "--no-progress", "--no-cache",
                 "--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "2 usable, 1 unreadable" in out
    assert "huge.png: 10000x10000 RGB needs 286 MiB decoded, over the 256 MiB budget" in out


@pytest.mark.parametrize("width, height, fragment", [
    (10_000, 10_000, "10000x10000 RGB needs 286 MiB decoded, over the 256 MiB budget"),
    (20_000, 20_000, "could be decompression bomb DOS attack"),
    (None, None, "cannot identify image file"),
], ids=["over-budget", "bomb", "not-an-image"])
def test_edit_refuses_a_photo_in_one_line(tmp_path: Path, capsys, width, height, fragment):
    photo = tmp_path / "photo.png"
    if width is None:
        photo.write_bytes(b"not an image")
    else:
        _png_claiming(photo, width, height)
    out = tmp_path / "edit.png"
    assert main(["edit", str(photo), "--attr", "Smiling=1", "--steps", "2", "-q",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"facediff: error: cannot read photo {photo}: ")
    assert fragment in err[0] and not out.exists()

