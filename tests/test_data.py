from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facediff.config import DataConfig
from facediff.data import load_data
from facediff.data.sources.folder import find_images
from facediff.data.transforms import crop_resize, model_to_uint8, to_mode, uint8_to_model
from facediff.errors import DataError


def load_image_folder(root: Path, size: int, channels: int = 3, progress: bool = False):
    return load_data(DataConfig(path=str(root), image_size=size, channels=channels,
                                cache=False), progress=progress)


def _save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def test_finds_images_recursively_with_all_extensions(tmp_path: Path):
    for i, ext in enumerate(["jpg", "png", "webp", "bmp", "JPEG"]):
        _save(tmp_path / f"sub{i % 2}" / f"a{i}.{ext}", Image.new("RGB", (8, 8), (i, 0, 0)))
    (tmp_path / "notes.txt").write_text("not an image")
    files = find_images(tmp_path)
    assert len(files) == 5
    assert files == sorted(files)


def test_missing_and_empty_folders_are_errors(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_images(tmp_path / "empty")
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        find_images(f)


def test_unreadable_files_are_skipped_with_a_count(tmp_path: Path, caplog):
    for i in range(3):
        _save(tmp_path / f"ok{i}.png", Image.new("RGB", (20, 20), (10 * i, 0, 0)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = tmp_path / "truncated.png"
    _save(good, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                                   dtype=np.uint8)))
    good.write_bytes(good.read_bytes()[:200])
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, 16, progress=False)
    assert len(data) == 3
    assert {n for n, _ in data.skipped} == {"broken.jpg", "truncated.png"}
    assert "skipped 2 of 5" in caplog.text and "broken.jpg" in caplog.text


def test_all_unreadable_is_an_error(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of the 1 images"):
        load_image_folder(tmp_path, 16, progress=False)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16", "1", "LA", "F"])
def test_every_mode_becomes_rgb_uint8(tmp_path: Path, mode: str):
    img = Image.new("RGB", (40, 30), (200, 100, 50))
    img = img.convert(mode) if mode not in ("I;16", "F") else Image.new(mode, (40, 30), 30000)
    out = to_mode(img, 3)
    assert out.mode == "RGB"
    arr = np.asarray(out)
    assert arr.dtype == np.uint8 and arr.shape == (30, 40, 3)
    if mode == "I;16":  # 16-bit is rescaled, not clipped to white
        assert 100 < arr[0, 0, 0] < 130


def test_transparent_pixels_composite_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_mode(img, 3)).min() == 255


def test_center_crop_and_resize():
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (20, 0, 40, 20))  # white center square
    out = np.asarray(crop_resize(img, 8))
    assert out.shape == (8, 8, 3)
    assert out.min() > 240  # the crop kept only the center
    squashed = np.asarray(crop_resize(img, 8, center_crop=False))
    assert squashed.min() < 20


def test_grayscale_model_and_small_images(tmp_path: Path, caplog):
    _save(tmp_path / "small.png", Image.new("RGB", (8, 8), (255, 255, 255)))
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, 16, channels=1, progress=False)
    assert data.images.shape == (1, 16, 16, 1)
    assert data.upscaled == 1 and "upscaled" in caplog.text


def test_scaling_happens_exactly_once():
    x = torch.tensor([[[[0], [255]], [[127], [128]]]], dtype=torch.uint8).expand(1, 2, 2, 3)
    y = uint8_to_model(x.contiguous())
    assert y.shape == (1, 3, 2, 2)
    assert y.min().item() == -1.0 and y.max().item() == 1.0
    assert torch.equal(model_to_uint8(y), x)
    with pytest.raises(TypeError):
        uint8_to_model(y)
