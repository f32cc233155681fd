from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.config import DataConfig
from facediff.data import load_data
from facediff.data import records as records_mod


def _cfg(root: Path, cache: Path, **kw) -> DataConfig:
    return DataConfig(path=str(root), source="folder", image_size=16, cache_dir=str(cache), **kw)


def _faces(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")


def test_second_load_reads_the_cache_not_the_images(tmp_path: Path, monkeypatch):
    _faces(tmp_path / "d", 5)
    first = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    assert len(list((tmp_path / "c").glob("*.u8"))) == 1

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(records_mod, "_decode_one", no_decoding)
    again = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.images), first.images)
    assert again.names == first.names


def test_changed_content_or_transform_gets_a_new_entry(tmp_path: Path):
    _faces(tmp_path / "d", 3)
    load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    load_data(_cfg(tmp_path / "d", tmp_path / "c", channels=1), progress=False)
    assert len(list((tmp_path / "c").glob("*.json"))) == 2
    img = tmp_path / "d" / "0.png"
    Image.new("RGB", (24, 24), (255, 0, 0)).save(img)
    os.utime(img, ns=(1, 1))  # a rewritten file: new size/mtime
    fresh = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    assert (np.asarray(fresh.images[0])[..., 0] > 200).all()
    assert len(list((tmp_path / "c").glob("*.json"))) == 3


def test_corrupt_entry_is_detected_and_rebuilt(tmp_path: Path, caplog):
    _faces(tmp_path / "d", 4)
    good = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    (data_file,) = (tmp_path / "c").glob("*.u8")
    raw = bytearray(data_file.read_bytes())
    raw[100] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    again = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    assert "corrupt" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.images), good.images)
    data_file.write_bytes(b"short")
    again = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    np.testing.assert_array_equal(np.asarray(again.images), good.images)


def test_cache_keeps_skipped_files_and_label_alignment(tmp_path: Path):
    _faces(tmp_path / "d", 3)
    (tmp_path / "d" / "1.png").write_bytes(b"broken")
    (tmp_path / "l.csv").write_text("file,Male\n0.png,1\n1.png,0\n2.png,0\n")
    cfg = _cfg(tmp_path / "d", tmp_path / "c", labels=str(tmp_path / "l.csv"))
    a = load_data(cfg, progress=False)
    b = load_data(cfg, progress=False)  # from the cache
    for d in (a, b):
        assert d.names == ["0.png", "2.png"] and d.labels[:, 0].tolist() == [1, 0]
        assert [n for n, _ in d.skipped] == ["1.png"]


def test_tampered_metadata_is_rebuilt_not_trusted(tmp_path: Path, caplog):
    import json

    _faces(tmp_path / "d", 3)
    good = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
    (meta,) = (tmp_path / "c").glob("*.json")
    for change in ({"kept": [0, 1]}, {"kept": [0, 1, 7]}, {"sizes": None}, {"version": 0}):
        m = json.loads(meta.read_text())
        m.update(change)
        meta.write_text(json.dumps(m))
        again = load_data(_cfg(tmp_path / "d", tmp_path / "c"), progress=False)
        assert again.names == good.names
        np.testing.assert_array_equal(np.asarray(again.images), good.images)
    assert caplog.text.count("corrupt") == 4
