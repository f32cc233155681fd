"""CelebA, UTKFace and MNIST sources, on tiny copies of their layouts made here."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.config import DataConfig
from facediff.data.records import decode_records
from facediff.data.sources.celeba import celeba_crop_box, celeba_records, is_celeba
from facediff.data.sources.mnist import is_mnist, mnist_records
from facediff.data.sources.utkface import age_bin_values, is_utkface, utkface_records
from facediff.errors import DataError

ATTRS = ["Bald", "Male", "Smiling", "Young"]
# one row per image: +1/-1 per attribute, and its partition (0 train, 1 val, 2 test)
CELEBA = {
    "000001.jpg": ([-1, 1, 1, 1], 0),
    "000002.jpg": ([1, 1, -1, -1], 0),
    "000003.jpg": ([-1, -1, 1, 1], 0),
    "000004.jpg": ([-1, -1, -1, 1], 1),
    "000005.jpg": ([-1, 1, 1, -1], 2),
    "000006.jpg": ([1, -1, -1, -1], 2),
}


def _gray(i: int) -> int:
    return 20 + 35 * i


def _solid(path: Path, level: int, size: tuple[int, int] = (178, 218)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (level, level, level)).save(path, quality=95)


def make_celeba(root: Path, attr_dir: str = "", eval_dir: str = "",
                img_dir: str = "img_align_celeba", partition: bool = True,
                size: tuple[int, int] = (178, 218)) -> Path:
    """The official layout; image i (1-based) is a solid gray of level ``_gray(i)``."""
    for i, name in enumerate(CELEBA, start=1):
        _solid(root / img_dir / name, _gray(i), size)
    lines = [str(len(CELEBA)), " ".join(ATTRS) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in vals) for name, (vals, _) in
              CELEBA.items()]
    (root / attr_dir).mkdir(parents=True, exist_ok=True)
    (root / attr_dir / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        (root / eval_dir).mkdir(parents=True, exist_ok=True)
        (root / eval_dir / "list_eval_partition.txt").write_text(
            "".join(f"{name} {part}\n" for name, (_, part) in CELEBA.items()))
    return root


def _expected(name: str) -> list[int]:
    return [int(v > 0) for v in CELEBA[name][0]]


def _check_lined_up(data, level_of: dict[str, int]) -> None:
    """Each decoded image is the file its key names (by its gray level)."""
    for img, name in zip(data.images, data.names, strict=True):
        assert abs(int(img[8, 8, 0]) - level_of[name]) <= 4, name


# --- CelebA -------------------------------------------------------------------------------


def test_celeba_spec_labels_crop_and_decode(tmp_path: Path) -> None:
    root = make_celeba(tmp_path / "celeba")
    assert is_celeba(root)
    rec = celeba_records(DataConfig(path=str(root)))
    assert rec.kind == "celeba" and len(rec) == 6 and rec.notes == []
    assert rec.spec.names == ATTRS
    assert all(c.kind == "binary" and c.values == ["0", "1"] for c in rec.spec.conditions)
    assert rec.labels.dtype == np.int16 and rec.labels.shape == (6, 4)
    for key, row in zip(rec.keys, rec.labels, strict=True):
        assert row.tolist() == _expected(Path(key).name)
    assert rec.crop_box == (19, 39, 159, 179)
    data = decode_records(rec, 16, progress=False)
    assert data.images.shape == (6, 16, 16, 3)
    levels = {f"img_align_celeba/{n}": _gray(i) for i, n in enumerate(CELEBA, start=1)}
    _check_lined_up(data, levels)
    assert [r.tolist() for r in data.labels] == [_expected(Path(n).name) for n in data.names]
    again = celeba_records(DataConfig(path=str(root)))
    assert again.fingerprint == rec.fingerprint


def test_celeba_splits(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)

    def names(split):
        rec = celeba_records(DataConfig(path=str(root), split=split))
        return [Path(k).name for k in rec.keys], rec

    assert names("all")[0] == list(CELEBA)
    train, rec = names("train")
    assert train == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert rec.labels.tolist() == [_expected(n) for n in train]
    for alias in ("val", "valid", "validation", "VAL"):
        assert names(alias)[0] == ["000004.jpg"]
    test, rec = names("test")
    assert test == ["000005.jpg", "000006.jpg"]
    assert rec.labels.tolist() == [_expected(n) for n in test]
    assert names("test")[1].fingerprint != names("train")[1].fingerprint
    assert names("heldout")[0] == ["000004.jpg", "000005.jpg", "000006.jpg"]
    with pytest.raises(DataError, match="unknown CelebA split 'dev'"):
        celeba_records(DataConfig(path=str(root), split="dev"))


def test_celeba_split_needs_partition_file(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, partition=False)
    assert len(celeba_records(DataConfig(path=str(root)))) == 6
    with pytest.raises(DataError, match=r"list_eval_partition\.txt"):
        celeba_records(DataConfig(path=str(root), split="train"))


def test_celeba_mirror_layouts(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, attr_dir="Anno", eval_dir="Eval",
                       img_dir="img_align_celeba/img_align_celeba")
    assert is_celeba(root)
    rec = celeba_records(DataConfig(path=str(root), split="train"))
    assert [Path(k).name for k in rec.keys] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert rec.keys[0] == "img_align_celeba/img_align_celeba/000001.jpg"
    assert not is_celeba(tmp_path / "Anno")


def test_celeba_missing_images_and_rows(tmp_path: Path) -> None:
    root = make_celeba(tmp_path)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    _solid(root / "img_align_celeba" / "000099.jpg", 250)
    rec = celeba_records(DataConfig(path=str(root)))
    assert [Path(k).name for k in rec.keys] == ["000001.jpg", "000003.jpg", "000004.jpg",
                                                 "000005.jpg", "000006.jpg"]
    assert rec.labels.tolist() == [_expected(Path(k).name) for k in rec.keys]
    assert any(n.startswith("1 label rows name missing images") and "000002.jpg" in n
               for n in rec.notes)
    assert any(n.startswith("1 images have no row") and "000099.jpg" in n for n in rec.notes)
    data = decode_records(rec, 16, progress=False)
    levels = {f"img_align_celeba/{n}": _gray(i) for i, n in enumerate(CELEBA, start=1)}
    _check_lined_up(data, levels)
    for n in ("000003.jpg", "000004.jpg", "000005.jpg", "000006.jpg"):
        (root / "img_align_celeba" / n).unlink()
    rec = celeba_records(DataConfig(path=str(root)))
    note = next(n for n in rec.notes if "missing images" in n)
    assert note.startswith("5 label rows") and note.endswith("...")
    (root / "img_align_celeba" / "000001.jpg").unlink()
    with pytest.raises(DataError, match="no CelebA images"):
        celeba_records(DataConfig(path=str(root)))


@pytest.mark.parametrize("edit, match", [
    (lambda ls: [*ls[:3], ls[3] + " 1", *ls[4:]], r"list_attr_celeba.txt, line 4: .*6 fields"),
    (lambda ls: [*ls[:4], ls[4].rsplit(" ", 1)[0], *ls[5:]], r"line 5: .*4 fields"),
    (lambda ls: [*ls[:2], ls[2].replace("-1", " 2", 1), *ls[3:]], r"line 3: value '2'"),
    (lambda ls: ls[1:], r"line 1: expected the number of images"),
    (lambda ls: ls[:1] + ls[2:], r"line 2: expected the attribute names"),
    (lambda ls: [*ls, ls[2]], r"line 9: 000001.jpg already has a row \(line 3\)"),
])
def test_celeba_malformed_attr_file(tmp_path: Path, edit, match) -> None:
    root = make_celeba(tmp_path)
    attr = root / "list_attr_celeba.txt"
    attr.write_text("\n".join(edit(attr.read_text().splitlines())) + "\n")
    with pytest.raises(DataError, match=match):
        celeba_records(DataConfig(path=str(root)))


def test_celeba_crop_box(tmp_path: Path) -> None:
    assert celeba_crop_box((178, 218), 140) == (19, 39, 159, 179)
    assert celeba_crop_box((178, 218), 0) is None
    assert celeba_crop_box((356, 436), 140) == (38, 78, 318, 358)
    with pytest.raises(DataError, match="celeba_crop"):
        celeba_crop_box((178, 218), 200)
    root = make_celeba(tmp_path / "big", size=(356, 436))
    assert celeba_records(DataConfig(path=str(root))).crop_box == (38, 78, 318, 358)
    rec = celeba_records(DataConfig(path=str(root), celeba_crop=0))
    assert rec.crop_box is None


# --- UTKFace ------------------------------------------------------------------------------

UTK = {  # file name -> (age bin, gender, race) with the default bins; -1 = unknown
    "26_0_2_20170104023102422.jpg.chip.jpg": (3, 0, 2),
    "1_1_0_20170109190747771.jpg.chip.jpg": (0, 1, 0),
    "75_0_4_20170110123456789.jpg": (8, 0, 4),
    "sub/45_1_3_20170101000000000.jpg.chip.jpg": (5, 1, 3),
    "61_1_20170109142408075.jpg.chip.jpg": (7, 1, -1),  # no race field
    "30_5_9_20170101000000001.jpg.chip.jpg": (4, -1, -1),  # out of range
}


def make_utk(root: Path) -> dict[str, int]:
    levels = {}
    for i, name in enumerate([*UTK, "holiday_photo.jpg"]):
        levels[name] = _gray(i)
        _solid(root / name, levels[name], (40, 40))
    return levels


def test_utkface_labels_notes_and_decode(tmp_path: Path) -> None:
    levels = make_utk(tmp_path)
    assert is_utkface(tmp_path)
    rec = utkface_records(DataConfig(path=str(tmp_path)))
    assert rec.kind == "utkface"
    assert rec.spec.names == ["age", "gender", "race"]
    assert rec.spec.get("age").values == ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49",
                                          "50-59", "60-69", "70+"]
    assert rec.spec.get("gender").values == ["male", "female"]
    assert rec.spec.get("race").values == ["White", "Black", "Asian", "Indian", "Others"]
    assert sorted(rec.keys) == sorted(UTK)
    assert {k: tuple(r) for k, r in zip(rec.keys, rec.labels.tolist(), strict=True)} == UTK
    assert any(n.startswith("1 images are not named") and "holiday_photo.jpg" in n
               for n in rec.notes)
    partial = next(n for n in rec.notes if "lack a field" in n)
    assert partial.startswith("2 file names") and "gender 1, race 2" in partial
    data = decode_records(rec, 16, progress=False)
    assert data.images.shape == (6, 16, 16, 3)
    _check_lined_up(data, levels)
    assert [tuple(r) for r in data.labels.tolist()] == [UTK[n] for n in data.names]


def test_utkface_age_bins(tmp_path: Path) -> None:
    assert age_bin_values([0, 3, 10]) == ["0-2", "3-9", "10+"]
    assert age_bin_values([0, 1, 5]) == ["0", "1-4", "5+"]
    for bad in ([], [3, 3], [10, 5], [-1, 5]):
        with pytest.raises(DataError, match="utk_age_bins"):
            age_bin_values(bad)
    make_utk(tmp_path)
    rec = utkface_records(DataConfig(path=str(tmp_path), utk_age_bins=[20, 50]))
    ages = dict(zip(rec.keys, rec.labels[:, 0].tolist(), strict=True))
    assert ages["1_1_0_20170109190747771.jpg.chip.jpg"] == -1
    assert ages["26_0_2_20170104023102422.jpg.chip.jpg"] == 0
    assert ages["75_0_4_20170110123456789.jpg"] == 1
    assert any("younger than the first age bin (20)" in n for n in rec.notes)
    assert rec.fingerprint != utkface_records(DataConfig(path=str(tmp_path))).fingerprint


def test_utkface_detection_and_no_names(tmp_path: Path) -> None:
    for i in range(3):
        _solid(tmp_path / f"img_{i:03d}.jpg", 100, (20, 20))
    assert not is_utkface(tmp_path)
    assert not is_utkface(tmp_path / "img_000.jpg")
    with pytest.raises(DataError, match="named like UTKFace"):
        utkface_records(DataConfig(path=str(tmp_path)))


# --- MNIST --------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, magic: int | None = None, count: int | None = None,
              gz: bool = False) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else 0x800 + arr.ndim
    dims = [count if count is not None else arr.shape[0], *arr.shape[1:]]
    data = np.array([magic, *dims], ">u4").tobytes() + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    train_y = np.array([3, 1, 4, 1, 5], np.uint8)
    test_x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    test_y = np.array([9, 2, 6], np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", train_x, gz=True)
    write_idx(root / "train-labels-idx1-ubyte.gz", train_y, gz=True)
    write_idx(root / "t10k-images.idx3-ubyte", test_x)  # raw, with the dotted name
    write_idx(root / "t10k-labels-idx1-ubyte", test_y)
    return train_x, train_y, test_x, test_y


def test_mnist_gzip_and_raw(tmp_path: Path) -> None:
    _, train_y, test_x, _ = make_mnist(tmp_path)
    assert is_mnist(tmp_path)
    rec = mnist_records(DataConfig(path=str(tmp_path)))
    assert rec.kind == "mnist" and len(rec) == 8
    assert rec.keys[:2] == ["train/00000", "train/00001"] and rec.keys[5] == "test/00000"
    assert rec.spec.names == ["digit"]
    assert rec.spec.get("digit").values == [str(d) for d in range(10)]
    assert rec.labels.dtype == np.int16 and rec.labels.shape == (8, 1)
    assert rec.labels[:, 0].tolist() == [3, 1, 4, 1, 5, 9, 2, 6]
    img = rec.open_image(6)
    assert img.mode == "L" and img.size == (28, 28)
    assert np.array_equal(np.asarray(img), test_x[1])
    data = decode_records(rec, 16, progress=False)
    assert data.images.shape == (8, 16, 16, 3) and data.labels[:, 0].tolist() == [
        3, 1, 4, 1, 5, 9, 2, 6]
    train = mnist_records(DataConfig(path=str(tmp_path), split="train"))
    assert len(train) == 5 and train.labels[:, 0].tolist() == train_y.tolist()
    test = mnist_records(DataConfig(path=str(tmp_path), split="test"))
    assert test.keys == ["test/00000", "test/00001", "test/00002"]
    assert np.array_equal(np.asarray(test.open_image(2)), test_x[2])
    assert len({rec.fingerprint, train.fingerprint, test.fingerprint}) == 3
    with pytest.raises(DataError, match="unknown MNIST split 'val'"):
        mnist_records(DataConfig(path=str(tmp_path), split="val"))


def test_mnist_only_test_set_and_missing_split(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    for p in tmp_path.glob("train-*"):
        p.unlink()
    assert is_mnist(tmp_path)
    assert len(mnist_records(DataConfig(path=str(tmp_path)))) == 3
    with pytest.raises(DataError, match="no MNIST train files"):
        mnist_records(DataConfig(path=str(tmp_path), split="train"))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert not is_mnist(tmp_path)
    with pytest.raises(DataError, match="no matching labels file"):
        mnist_records(DataConfig(path=str(tmp_path)))


@pytest.mark.parametrize("name, kwargs, match", [
    ("t10k-images.idx3-ubyte", {"magic": 0x801}, r"t10k-images.idx3-ubyte has magic number"),
    ("t10k-labels-idx1-ubyte", {"magic": 0x803}, r"t10k-labels-idx1-ubyte has magic number"),
    ("t10k-labels-idx1-ubyte", {"count": 4}, r"t10k-labels-idx1-ubyte has 11 bytes but"),
    ("t10k-labels-idx1-ubyte", {"arr": [1, 2]}, r"has 3 images but t10k-labels"),
    ("t10k-labels-idx1-ubyte", {"arr": [1, 2, 12]}, r"a label 12"),
])
def test_mnist_bad_files(tmp_path: Path, name: str, kwargs: dict, match: str) -> None:
    _, _, test_x, test_y = make_mnist(tmp_path)
    arr = kwargs.pop("arr", test_x if "images" in name else test_y)
    write_idx(tmp_path / name, np.array(arr), **kwargs)
    with pytest.raises(DataError, match=match):
        mnist_records(DataConfig(path=str(tmp_path), split="test"))


def test_mnist_corrupt_gzip(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-6])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz"):
        mnist_records(DataConfig(path=str(tmp_path)))
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read MNIST file"):
        mnist_records(DataConfig(path=str(tmp_path), split="train"))


def test_utkface_names_survive_data_align(tmp_path: Path) -> None:
    """``facediff data align`` writes 26_0_2_DATE.jpg.chip.png: still UTKFace, same labels."""
    from facediff.data.sources.utkface import parse_name

    assert parse_name("26_0_2_20170104023102422.jpg.chip.png") == (26, 0, 2)
    assert parse_name("26_0_2_20170104023102422.png") == (26, 0, 2)
    for i, name in enumerate(["26_0_2_20170104023102422", "3_1_4_20170104023102423"]):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{name}.jpg.chip.png")
    assert is_utkface(tmp_path)
