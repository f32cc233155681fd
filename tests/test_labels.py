"""Image folder + labels file (FairFace-style CSV, TSV, JSON) and the bad cases."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.config import DataConfig
from facediff.data import load_data
from facediff.data.conditions import label_stats
from facediff.errors import DataError


def _faces(root: Path, names: list[str]) -> None:
    for i, n in enumerate(names):
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (10 * i, 50, 90)).save(p)


def _load(root: Path, labels: Path, **kw) -> object:
    return load_data(DataConfig(path=str(root), source="folder", labels=str(labels),
                                image_size=16, cache=False, **kw), progress=False)


def test_fairface_style_csv(tmp_path: Path):
    _faces(tmp_path, ["train/1.jpg", "train/2.jpg", "train/3.jpg", "train/4.jpg"])
    csv = tmp_path / "fairface_label_train.csv"
    csv.write_text("file,age,gender,race,service_test\n"
                   "train/1.jpg,50-59,Male,East Asian,True\n"
                   "train/2.jpg,3-9,Female,Indian,False\n"
                   "train/3.jpg,10-19,Female,White,True\n"
                   "train/4.jpg,more than 70,Male,,False\n")
    d = _load(tmp_path, csv)
    assert d.spec.names == ["age", "gender", "race", "service_test"]
    age, gender, _race, st = d.spec.conditions
    assert age.kind == "categorical" and age.values == ["3-9", "10-19", "50-59", "more than 70"]
    assert gender.values == ["Female", "Male"]
    assert st.kind == "binary"
    assert d.names == ["train/1.jpg", "train/2.jpg", "train/3.jpg", "train/4.jpg"]
    np.testing.assert_array_equal(d.labels[:, 0], [2, 0, 1, 3])
    assert d.labels[3, 2] == -1  # empty cell: unknown, not a guess
    stats = {s["name"]: s for s in label_stats(d.spec, d.labels)}
    assert stats["service_test"]["positive_rate"] == 0.5
    assert stats["race"]["unknown"] == 1


def test_selected_conditions_and_misspellings(tmp_path: Path):
    _faces(tmp_path, ["a.png", "b.png"])
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("filename\tSmiling\tEyeglasses\na.png\t1\t-1\nb.png\t-1\t1\n")
    d = _load(tmp_path, tsv, conditions=["Eyeglasses"])
    assert d.spec.names == ["Eyeglasses"] and d.labels[:, 0].tolist() == [0, 1]
    with pytest.raises(DataError, match=r"did you mean 'Smiling'\?.*valid: Smiling, Eyeglasses"):
        _load(tmp_path, tsv, conditions=["Smilling"])


def test_json_labels(tmp_path: Path):
    _faces(tmp_path, ["x/a.png", "y/b.png"])
    js = tmp_path / "labels.json"
    js.write_text(json.dumps([{"image": "a.png", "digit": 7, "happy": True},
                              {"image": "b.png", "digit": 3, "happy": False}]))
    d = _load(tmp_path, js)  # matched by unique base name
    assert d.spec.get("digit").values == ["3", "7"]
    assert d.labels.tolist() == [[1, 1], [0, 0]]


def test_missing_images_and_unlabeled_images_are_skipped_and_counted(tmp_path: Path, caplog):
    _faces(tmp_path, ["a.png", "b.png", "c.png"])
    csv = tmp_path / "l.csv"
    csv.write_text("file,Male\na.png,1\nb.png,0\nghost.png,1\n")
    with caplog.at_level(logging.WARNING):
        d = _load(tmp_path, csv)
    assert d.names == ["a.png", "b.png"] and d.labels[:, 0].tolist() == [1, 0]
    assert any("1 label rows name missing images" in n and "ghost.png" in n for n in d.notes)
    assert any("1 images have no label row" in n and "c.png" in n for n in d.notes)


@pytest.mark.parametrize("content, fragment", [
    ("age,gender\n3,M\n", "no file-name column"),
    ("file\na.png\n", "no label columns"),
    ("file,age\n", "no data rows"),
    ("file,age\na.png,1,2\n", "line 2: 3 cells"),
    ("file,age\nnope.png,1\n", "no image in"),
    ("file,age\na.png,1\na.png,2\n", "more than once"),
])
def test_bad_labels_files(tmp_path: Path, content: str, fragment: str):
    _faces(tmp_path, ["a.png"])
    f = tmp_path / "l.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=fragment):
        _load(tmp_path, f)


def test_unreadable_image_drops_its_label_row(tmp_path: Path):
    _faces(tmp_path, ["a.png", "c.png"])
    (tmp_path / "b.png").write_bytes(b"not a png")
    csv = tmp_path / "l.csv"
    csv.write_text("file,Male\na.png,1\nb.png,0\nc.png,0\n")
    d = _load(tmp_path, csv)
    assert d.names == ["a.png", "c.png"] and d.labels[:, 0].tolist() == [1, 0]
    assert d.skipped[0][0] == "b.png"


def test_labels_file_must_exist(tmp_path: Path):
    _faces(tmp_path, ["a.png"])
    with pytest.raises(DataError, match="labels file not found"):
        _load(tmp_path, tmp_path / "missing.csv")


def test_rows_with_a_folder_never_bind_to_a_same_named_file_elsewhere(tmp_path: Path):
    _faces(tmp_path, ["val/1.jpg", "val/2.jpg"])
    csv = tmp_path / "train_labels.csv"
    csv.write_text("file,Male\ntrain/1.jpg,1\ntrain/2.jpg,0\n")
    with pytest.raises(DataError, match="no image in"):
        _load(tmp_path / "val", csv)
    ok = tmp_path / "val_labels.csv"  # rows relative to the parent of data.path still match
    ok.write_text("file,Male\nval/1.jpg,1\nval/2.jpg,0\n")
    assert _load(tmp_path / "val", ok).labels[:, 0].tolist() == [1, 0]


def test_values_that_mean_the_same_state_are_not_merged(tmp_path: Path):
    _faces(tmp_path, ["a.png", "b.png"])
    csv = tmp_path / "l.csv"
    csv.write_text("file,odd\na.png,0\nb.png,-1\n")
    d = _load(tmp_path, csv)
    assert d.spec.get("odd").kind == "categorical" and d.labels[:, 0].tolist() == [1, 0]


def test_duplicate_columns_are_an_error(tmp_path: Path):
    _faces(tmp_path, ["a.png"])
    csv = tmp_path / "l.csv"
    csv.write_text("file,Male,Male\na.png,1,0\n")
    with pytest.raises(DataError, match="more than once"):
        _load(tmp_path, csv)


def test_an_empty_condition_list_means_unconditional(tmp_path: Path):
    _faces(tmp_path, ["a.png"])
    csv = tmp_path / "l.csv"
    csv.write_text("file,Male\na.png,1\n")
    d = _load(tmp_path, csv, conditions=[])
    assert not d.spec and d.labels is None


_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
_RACES = ["White", "Black", "East Asian", "Indian", "Latino_Hispanic", "Middle Eastern",
          "Southeast Asian"]


def _fairface_like(tmp_path: Path, n: int, extra: dict[str, object] | None = None) -> Path:
    """``n`` images and a FairFace-layout CSV (file,age,gender,race,service_test) with the
    ``extra`` columns (name -> function of the row index) after them."""
    extra = extra or {}
    _faces(tmp_path, [f"train/{i}.jpg" for i in range(n)])
    lines = [",".join(["file", "age", "gender", "race", "service_test", *extra])]
    for i in range(n):
        lines.append(",".join([f"train/{i}.jpg", _AGES[i % 9], ["Male", "Female"][i % 2],
                               _RACES[i % 7], ["True", "False"][i % 3 == 0],
                               *(str(f(i)) for f in extra.values())]))
    csv = tmp_path / "fairface_label_train.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def test_fairface_layout_keeps_every_condition_on_a_larger_file(tmp_path: Path):
    csv = _fairface_like(tmp_path, 63, {"years": lambda i: i % 40 + 1})  # integers: kept
    d = _load(tmp_path, csv)
    assert d.spec.names == ["age", "gender", "race", "service_test", "years"]
    assert [c.kind for c in d.spec.conditions] == ["categorical"] * 3 + ["binary",
                                                                         "categorical"]
    assert d.spec.get("age").values == _AGES and len(d.spec.get("years").values) == 40
    assert not any("left out" in n for n in d.notes)
    assert (d.labels >= 0).all()


@pytest.mark.parametrize("column, cell, why", [
    ("person_id", lambda i: f"p{i:04d}", "a different value in each of its 30 rows"),
    ("caption", lambda i: f"a person smiling {i % 20} times", "20 distinct text values in 30"),
    ("score", lambda i: f"{(i % 18) / 7:.4f}", "18 distinct decimal values in 30 rows"),
], ids=["id", "free-text", "float"])
def test_id_text_and_float_columns_are_left_out_unless_named(tmp_path: Path, caplog,
                                                             column, cell, why):
    csv = _fairface_like(tmp_path, 30, {column: cell})
    with caplog.at_level(logging.WARNING):
        d = _load(tmp_path, csv)
    assert d.spec.names == ["age", "gender", "race", "service_test"]
    [note] = [n for n in d.notes if "left out" in n]
    assert f"{column!r} ({why}" in note
    assert f"--set data.conditions=age,gender,race,service_test,{column}" in note
    assert note in caplog.text  # said as a warning, not only kept in the notes
    kept = _load(tmp_path, csv, conditions=["age", column])
    assert kept.spec.names == ["age", column]
    assert kept.spec.get(column).kind == "categorical" and (kept.labels >= 0).all()
    assert not any("left out" in n for n in kept.notes)


def test_when_every_column_is_left_out_the_folder_is_unconditional(tmp_path: Path):
    _faces(tmp_path, [f"{i}.png" for i in range(25)])
    csv = tmp_path / "l.csv"
    csv.write_text("file,caption,remarks\n" + "".join(
        f"{i}.png,face number {i},\n" for i in range(25)))
    d = _load(tmp_path, csv)
    assert d.spec is None and d.labels is None and len(d) == 25
    [note] = [n for n in d.notes if "left out" in n]
    assert "'remarks' (no values)" in note and "so the images are unconditional" in note
    assert note.endswith("--set data.conditions=caption")  # an empty column cannot be named
    named = _load(tmp_path, csv, conditions=["caption"])
    assert named.spec.names == ["caption"] and len(named.spec.get("caption").values) == 25
