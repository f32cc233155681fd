"""The Hugging Face source, on tiny datasets built here (no hub access)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.config import DataConfig
from facediff.data.records import decode_records
from facediff.data.sources import hf
from facediff.data.sources.hf import hf_records, is_hf_local, looks_like_hub_name
from facediff.errors import DataError

datasets = pytest.importorskip("datasets")

N = 6
RACES = ["White", "Black", "Asian"]


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (i * 40, 255 - i * 40, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _make(broken: int | None = None, n: int = N):
    images = [{"bytes": b"this is not an image" if i == broken else _png(i), "path": None}
              for i in range(n)]
    features = datasets.Features({
        "image": datasets.Image(),
        "race": datasets.ClassLabel(names=RACES),
        "gender": datasets.ClassLabel(names=["Male", "Female"]),
        "smiling": datasets.Value("bool"),
        "glasses": datasets.Value("int64"),
        "pm": datasets.Value("int8"),
        "age": datasets.Value("int32"),
        "name": datasets.Value("string"),
        "score": datasets.Value("float32"),
    })
    data = {
        "image": images,
        "race": [0, 1, 2, None, 1, 0][:n],
        "gender": [0, 1, 1, 0, None, 1][:n],
        "smiling": [True, False, None, True, False, True][:n],
        "glasses": [0, 1, 1, None, 0, 0][:n],
        "pm": [1, -1, -1, 1, None, 1][:n],
        "age": [5, 30, 41, 67, 22, 18][:n],
        "name": ["bo", "al", None, "bo", "cy", ""][:n],
        "score": [0.5] * n,
    }
    return datasets.Dataset.from_dict(data, features=features)


EXPECTED = np.array([
    # race gender smiling glasses pm name(al, bo, cy)
    [0, 0, 1, 0, 1, 1],
    [1, 1, 0, 1, 0, 0],
    [2, 1, -1, 1, 0, -1],
    [-1, 0, 1, -1, 1, 1],
    [1, -1, 0, 0, -1, 2],
    [0, 1, 1, 0, 1, -1],
], dtype=np.int16)
LABEL_COLS = ["race", "gender", "smiling", "glasses", "pm", "name"]


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    # parquet loading converts to arrow in the datasets cache: keep it out of ~/.cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE",
                        tmp_path_factory.getbasetemp() / "hf_cache")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hf") / "faces"
    _make().save_to_disk(str(d))
    return d


@pytest.fixture(scope="module")
def saved_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hfdict") / "faces"
    ds = _make()
    datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 6))}) \
        .save_to_disk(str(d))
    return d


def _cfg(path: Path | str, **kw) -> DataConfig:
    return DataConfig(path=str(path), **kw)


def _check_test_split(rec) -> None:
    """Rows 4-5: string values are the split's own (only "cy" is left there)."""
    np.testing.assert_array_equal(rec.labels[:, :5], EXPECTED[4:, :5])
    assert rec.spec.get("name").values == ["cy"]
    np.testing.assert_array_equal(rec.labels[:, 5], [0, -1])


def test_detection(saved: Path, saved_dict: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch):
    assert is_hf_local(saved) and is_hf_local(saved_dict)
    assert is_hf_local(saved_dict / "train")  # one split of a DatasetDict
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    assert is_hf_local(repo) and is_hf_local(repo / "data" / "train-00000-of-00001.parquet")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    assert not is_hf_local(images)
    assert not is_hf_local(tmp_path / "missing")

    assert looks_like_hub_name("jlbaker361/anime_faces_dim_128_50k")
    assert looks_like_hub_name("HuggingFaceM4/FairFace")
    assert looks_like_hub_name("HuggingFaceM4/FairFace:0.25")
    assert looks_like_hub_name("hf://datasets/HuggingFaceM4/FairFace")
    for text in ("faces", "/data/faces", "./a/b", "../a/b", "a/b/c", "a b/c", ""):
        assert not looks_like_hub_name(text), text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not looks_like_hub_name("owner/name")  # an existing local path wins


def test_save_to_disk_dataset(saved: Path):
    rec = hf_records(_cfg(saved))
    assert rec.kind == "hf" and len(rec) == N
    assert rec.keys[0] == "train/000000" and rec.keys[-1] == "train/000005"
    assert rec.spec is not None and rec.spec.names == LABEL_COLS
    kinds = {c.name: (c.kind, c.values) for c in rec.spec.conditions}
    assert kinds["race"] == ("categorical", RACES)
    assert kinds["gender"] == ("categorical", ["Male", "Female"])  # 2-name ClassLabel
    assert kinds["smiling"] == ("binary", ["0", "1"])
    assert kinds["glasses"][0] == kinds["pm"][0] == "binary"
    assert kinds["name"] == ("categorical", ["al", "bo", "cy"])
    assert rec.labels is not None and rec.labels.dtype == np.int16
    np.testing.assert_array_equal(rec.labels, EXPECTED)
    assert any("age" in n and "score" in n for n in rec.notes)  # not usable, noted

    img = rec.open_image(2)
    assert img.size == (24, 24) and img.convert("RGB").getpixel((0, 0)) == (80, 175, 0)
    decoded = decode_records(rec, 16, progress=False, workers=2)
    assert decoded.images.shape == (N, 16, 16, 3) and not decoded.skipped
    assert decoded.kind == "hf" and decoded.spec is rec.spec

    again = hf_records(_cfg(saved))
    assert again.fingerprint == rec.fingerprint
    assert hf_records(_cfg(saved, conditions=["race"])).fingerprint != rec.fingerprint


def test_dataset_dict_splits(saved_dict: Path):
    train = hf_records(_cfg(saved_dict))
    assert len(train) == 4 and train.keys[0] == "train/000000"
    np.testing.assert_array_equal(train.labels, EXPECTED[:4])
    test = hf_records(_cfg(saved_dict, split="test"))
    assert len(test) == 2 and test.keys == ["test/000000", "test/000001"]
    _check_test_split(test)
    assert test.fingerprint != train.fingerprint
    with pytest.raises(DataError, match=r"unknown split 'val'.*(train, test|test, train)"):
        hf_records(_cfg(saved_dict, split="val"))
    # pointing at one split's folder works too
    assert hf_records(_cfg(saved_dict / "test")).keys[0] == "test/000000"


def test_parquet(tmp_path: Path):
    ds = _make()
    repo = tmp_path / "repo"
    ds.select(range(4)).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    ds.select(range(4, 6)).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    assert is_hf_local(repo)

    rec = hf_records(_cfg(repo))
    assert len(rec) == 4 and rec.spec.names == LABEL_COLS
    np.testing.assert_array_equal(rec.labels, EXPECTED[:4])
    test = hf_records(_cfg(repo, split="test"))
    assert test.keys == ["test/000000", "test/000001"]
    _check_test_split(test)
    with pytest.raises(DataError, match="splits: test, train"):
        hf_records(_cfg(repo, split="validation"))

    single = tmp_path / "faces.parquet"
    ds.to_parquet(str(single))
    one = hf_records(_cfg(single, conditions=["race", "smiling"]))
    assert len(one) == N and one.keys[0] == "train/000000"
    np.testing.assert_array_equal(one.labels, EXPECTED[:, [0, 2]])
    assert decode_records(one, 16, progress=False, workers=2).images.shape == (N, 16, 16, 3)


def test_image_column(tmp_path: Path, saved: Path):
    with pytest.raises(DataError, match=r"image column 'img' not in .*columns: image, race"):
        hf_records(_cfg(saved, image_column="img"))
    with pytest.raises(DataError, match="holds float32, not images"):
        hf_records(_cfg(saved, image_column="score"))

    # the image is not the first column, and a second image column can be picked by name
    ds = _make().rename_column("image", "photo")
    ds = ds.add_column("thumb", [{"bytes": _png(5), "path": None}] * N,
                       feature=datasets.Image())
    ds = ds.select_columns(["race", "photo", "thumb"])
    d = tmp_path / "two"
    ds.save_to_disk(str(d))
    rec = hf_records(_cfg(d))
    assert rec.open_image(0).convert("RGB").getpixel((0, 0)) == (0, 255, 0)
    assert rec.spec.names == ["race"]  # the other image column is no condition
    thumb = hf_records(_cfg(d, image_column="thumb"))
    assert thumb.open_image(0).convert("RGB").getpixel((0, 0)) == (200, 55, 0)

    plain = tmp_path / "plain"
    datasets.Dataset.from_dict({"a": [1, 2], "b": ["x", "y"]}).save_to_disk(str(plain))
    with pytest.raises(DataError, match=r"no image column .*a \(int64\), b \(string\)"):
        hf_records(_cfg(plain))


def test_conditions_selection(saved: Path, monkeypatch: pytest.MonkeyPatch):
    rec = hf_records(_cfg(saved, conditions=["smiling", "Race"]))
    assert rec.spec.names == ["smiling", "race"]
    np.testing.assert_array_equal(rec.labels, EXPECTED[:, [2, 0]])
    none = hf_records(_cfg(saved, conditions=[]))
    assert none.spec is None and none.labels is None

    with pytest.raises(DataError) as err:
        hf_records(_cfg(saved, conditions=["rac"]))
    msg = str(err.value)
    assert "'rac'" in msg and "did you mean 'race'" in msg and "\n" not in msg
    assert "usable: race, gender, smiling, glasses, pm, name" in msg
    with pytest.raises(DataError, match=r"'age'.*cannot be a condition.*other than 0/1"):
        hf_records(_cfg(saved, conditions=["age"]))
    with pytest.raises(DataError, match="'image' is the image column"):
        hf_records(_cfg(saved, conditions=["image"]))

    # a string column with too many distinct values is skipped, or an error when asked for
    monkeypatch.setattr(hf, "MAX_STRING_VALUES", 2)
    assert "name" not in hf_records(_cfg(saved)).spec.names
    with pytest.raises(DataError, match="3 distinct values"):
        hf_records(_cfg(saved, conditions=["name"]))


def test_unreadable_row_is_skipped(tmp_path: Path):
    d = tmp_path / "broken"
    _make(broken=2).save_to_disk(str(d))
    rec = hf_records(_cfg(d))
    assert len(rec) == N
    with pytest.raises(OSError):
        rec.open_image(2).load()
    out = decode_records(rec, 16, progress=False, workers=2)
    assert len(out) == N - 1
    assert [k for k, _ in out.skipped] == ["train/000002"]
    keep = [0, 1, 3, 4, 5]
    assert out.names == [f"train/{i:06d}" for i in keep]
    np.testing.assert_array_equal(out.labels, EXPECTED[keep])
    # the images stayed with their rows: the red channel grows by 40 per row
    np.testing.assert_allclose(out.images[:, :, :, 0].mean(axis=(1, 2)),
                               [40 * i for i in keep], atol=1)


def test_hub_network_failure(monkeypatch: pytest.MonkeyPatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/faces' on the Hub (LocalEntryNotFound)"
                              "\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        hf_records(_cfg("someone/faces"))
    msg = str(err.value)
    assert "someone/faces" in msg and "ConnectionError" in msg and "\n" not in msg
    with pytest.raises(DataError, match="data path not found"):
        hf_records(_cfg("no_such_folder"))


def test_hub_config_and_split_choice(monkeypatch: pytest.MonkeyPatch):
    ds = _make()
    calls: list[tuple] = []

    def fake_load(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        if config is None:
            raise ValueError("Config name is missing.\nPlease pick one among the available "
                             "configs: ['0.25', '1.25']")
        splits = {"validation": ds.select(range(2)), "extra": ds.select(range(2, 6))}
        if split is None:
            return datasets.DatasetDict(splits)
        if split not in splits:
            raise ValueError(f'Unknown split "{split}". Should be one of {list(splits)}.')
        return splits[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda name: ["0.25", "1.25"])
    rec = hf_records(_cfg("HuggingFaceM4/FairFace", split="validation"))
    assert rec.root == "HuggingFaceM4/FairFace" and len(rec) == 2
    assert rec.keys[0] == "validation/000000"
    assert calls[-1] == ("HuggingFaceM4/FairFace", "0.25", "validation")
    assert any("config '0.25'" in n for n in rec.notes)

    with pytest.raises(DataError, match=r"no 'train' split; set data.split.*validation, extra"):
        hf_records(_cfg("HuggingFaceM4/FairFace:1.25"))
    with pytest.raises(DataError, match="unknown split 'nope'"):
        hf_records(_cfg("HuggingFaceM4/FairFace:1.25", split="nope"))


def test_missing_datasets_package(saved: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="pip install datasets"):
        hf_records(_cfg(saved))
