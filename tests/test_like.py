"""``facediff sample --like PHOTO``: the classifier shipped with the model reads the photo,
and the faces are generated with what it read (or the ``--keep`` subset)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facediff
from facediff.app.logic import Limits, Output, Session
from facediff.cli import main
from facediff.data.conditions import ConditionSpec
from facediff.errors import FacediffError
from facediff.eval.classifier import AttributeClassifier, TrainedClassifier, save_classifier
from facediff.faces.like import keep_readings, model_classifier, read_attributes
from tests.test_app import CONDS, tiny_model


def _rigged_classifier(values: list[int], size: int = 16) -> TrainedClassifier:
    """A classifier that reads every image the same way: condition j as value values[j]
    (zero weights, a bias on that value)."""
    spec = ConditionSpec(list(CONDS))
    clf = AttributeClassifier([len(c.values) for c in spec.conditions], 3, image_size=size)
    with torch.no_grad():
        clf.head.weight.zero_()
        bias = []
        for c, v in zip(spec.conditions, values, strict=True):
            b = torch.zeros(len(c.values))
            b[v] = 4.0
            bias.append(b)
        clf.head.bias.copy_(torch.cat(bias))
    return TrainedClassifier(clf, spec, {c.name: 0.9 for c in spec.conditions},
                             {c.name: 0.5 for c in spec.conditions})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conditional model exported with its classifier (Smiling=1, hair=red)."""
    d = tmp_path_factory.mktemp("like") / "model"
    tiny_model(True).save(d)
    save_classifier(_rigged_classifier([1, 2]), d / "classifier")
    return d


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(p)
    return p


def test_the_reading_is_what_the_classifier_says():
    clf = _rigged_classifier([0, 1])
    crop = np.zeros((16, 16, 3), np.uint8)
    got = read_attributes(clf, crop, ["Smiling", "hair"])
    assert [r.request for r in got] == ["Smiling=0", "hair=dark"]
    assert all(r.confidence > 0.9 for r in got)
    assert [r.request for r in read_attributes(clf, crop, ["hair"])] == ["hair=dark"]
    assert [r.name for r in keep_readings(got, ["HAIR"])] == ["hair"]
    with pytest.raises(FacediffError, match="--keep Male: not read"):
        keep_readings(got, ["Male"])


def test_sample_like_generates_with_the_attributes_read(model_dir: Path, photo: Path,
                                                        tmp_path: Path, capsys):
    like, want = tmp_path / "like", tmp_path / "want"
    args = [str(model_dir), "-n", "3", "--steps", "3", "--seed", "5",
            "--no-progress"]
    assert main(["sample", *args, "--like", str(photo), "--no-align", "--out", str(like)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"read from .*photo\.jpg \(centre crop\): Smiling=1 \(0\.\d\d\), "
                     r"hair=red \(0\.\d\d\)", printed), printed
    assert main(["sample", *args, "--attr", "Smiling=1", "--attr", "hair=red",
                 "--out", str(want)]) == 0
    for i in (1, 2, 3):  # the same faces as asking for those attributes
        a = np.asarray(Image.open(like / f"sample_000{i}.png"))
        b = np.asarray(Image.open(want / f"sample_000{i}.png"))
        np.testing.assert_array_equal(a, b)
    assert Image.open(like / "like_photo.png").size == (16, 16)
    # --keep: only hair; --attr overrides what was read
    kept = tmp_path / "kept"
    assert main(["sample", *args, "--like", str(photo), "--no-align", "--keep", "hair",
                 "--attr", "hair=blond", "--out", str(kept)]) == 0
    assert main(["sample", *args, "--attr", "hair=blond", "--out", str(want)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(kept / "sample_0001.png")),
                                  np.asarray(Image.open(want / "sample_0001.png")))
    differs = np.asarray(Image.open(like / "sample_0001.png"))
    assert not np.array_equal(differs, np.asarray(Image.open(want / "sample_0001.png")))


def test_like_without_a_classifier_or_with_bad_flags_is_one_line(tmp_path: Path, photo: Path,
                                                                 capsys):
    bare = tmp_path / "bare"
    tiny_model(True).save(bare)
    assert main(["sample", str(bare), "--like", str(photo), "--no-align",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ships no attribute classifier" in err[0]
    assert main(["sample", str(bare), "--keep", "hair"]) == 2
    assert "--keep and --classifier go with --like" in capsys.readouterr().err
    plain = tmp_path / "plain"
    tiny_model(False).save(plain)
    assert main(["sample", str(plain), "--like", str(photo), "--no-align"]) == 2
    assert "--like needs an attribute model" in capsys.readouterr().err


def test_the_classifier_is_found_beside_the_weights_or_given(model_dir: Path, tmp_path: Path):
    model = facediff.load(model_dir, device="cpu")
    assert model_classifier(model).spec.names == ["Smiling", "hair"]
    other = tmp_path / "other"
    save_classifier(_rigged_classifier([0, 0]), other)
    clf = model_classifier(model, other)
    got = read_attributes(clf, np.zeros((16, 16, 3), np.uint8), model.spec.names)
    assert [r.request for r in got] == ["Smiling=0", "hair=blond"]


def test_the_app_makes_faces_like_the_photo(model_dir: Path, photo: Path, tmp_path: Path):
    model = facediff.load(model_dir, device="cpu", precision="fp32")
    session = Session(model, Limits(max_images=4, max_steps=10, preview_every_s=0.0),
                      out_dir=tmp_path / "app")
    items = list(session.like(str(photo), 2, "ddim", 3, seed=7, align=False))
    final = items[-1]
    assert isinstance(final, Output)
    assert final.info.startswith("read: Smiling=1 (")
    assert "hair=red" in final.info
    grid = np.asarray(Image.open(final.path))
    want = model.sample_tensor(2, settings=session.settings(sampler="ddim", steps=3, seed=7),
                               attrs=["Smiling=1", "hair=red"])
    assert grid.shape == (16 + 4, 2 * 16 + 6, 3)
    np.testing.assert_array_equal(grid[2:18, 2:18], want[0].numpy())
    with pytest.raises(FacediffError, match="Upload a photo"):
        list(session.like(None, 2, "ddim", 3, seed=7))


def test_readings_the_classifier_is_unsure_of_are_left_to_the_model(model_dir: Path,
                                                                    photo: Path,
                                                                    tmp_path: Path, capsys):
    got = read_attributes(_rigged_classifier([1, 2]), np.zeros((16, 16, 3), np.uint8),
                          ["Smiling", "hair"])
    assert 0.95 < got[1].confidence < got[0].confidence < 0.99  # 2 values vs 3, same bias
    assert [r.name for r in keep_readings(got, None, 0.97)] == ["Smiling"]
    assert keep_readings(got, ["hair"], 0.99) == [got[1]]  # named in --keep: kept anyway
    args = [str(model_dir), "-n", "2", "--steps", "3", "--no-progress"]
    assert main(["sample", *args, "--like", str(photo), "--no-align", "--min-confidence",
                 "0.97", "--out", str(tmp_path / "a")]) == 0
    assert "left to the model: hair (read less surely than 0.97)" in capsys.readouterr().out
    assert main(["sample", *args, "--attr", "Smiling=1", "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "sample_0002.png")),
                                  np.asarray(Image.open(tmp_path / "b" / "sample_0002.png")))
    assert main(["sample", *args, "--like", str(photo), "--min-confidence", "2"]) == 2


@pytest.mark.parametrize("name", ["celeba-attrs-32", "celeba-attrs-32-fast"])
def test_the_bundled_attribute_models_ship_a_classifier(name: str):
    """The attribute model has one beside its weights; its distilled companion uses its
    teacher's."""
    model = facediff.load(name, device="cpu")
    clf = model_classifier(model)
    assert clf.spec.names == model.spec.names and clf.model.image_size == 32
    assert np.mean(list(clf.accuracy.values())) > 0.9  # on the 660 test photos
