from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facediff.cli import main


def test_inspect_prints_the_summary_and_writes_a_grid(tmp_path: Path, capsys):
    d = tmp_path / "faces"
    d.mkdir()
    for i in range(6):
        Image.new("RGB", (40 + 10 * (i % 2), 30), (40 * i, 20, 200)).save(d / f"{i}.jpg")
    (d / "bad.jpg").write_bytes(b"nope")
    labels = tmp_path / "l.csv"
    labels.write_text("file,Smiling,age\n" + "".join(
        f"{i}.jpg,{i % 2},{'3-9' if i < 3 else '10-19'}\n" for i in range(6)) + "bad.jpg,1,3-9\n")
    grid = tmp_path / "grid.png"
    assert main(["data", "inspect", str(d), "--labels", str(labels), "--grid", str(grid),
                 "--size", "16", "--no-progress", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "source       folder" in out
    assert "6 usable, 1 unreadable" in out
    assert "40x30 (3)" in out and "50x30 (3)" in out
    assert "bad.jpg" in out
    import re

    assert re.search(r"Smiling +binary +positive +50\.0%", out), out
    assert "age" in out and "3-9 3, 10-19 3" in out
    img = np.asarray(Image.open(grid))
    assert img.shape[0] > 16 and img.std() > 0


def test_inspect_bad_path_is_one_line(tmp_path: Path, capsys):
    assert main(["data", "inspect", str(tmp_path / "nope"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_training_on_labels_records_the_condition_spec(tmp_path: Path):
    from facediff.config import Config
    from tests.conftest import plain_faces, tiny_args

    d = plain_faces(tmp_path / "faces")
    labels = tmp_path / "l.csv"
    labels.write_text("file,Male,race\n" + "".join(
        f"{i}.png,{i % 2},{['White', 'Black'][i // 4]}\n" for i in range(8)))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *tiny_args(d), "--labels", str(labels),
                 "--max-steps", "1"]) == 0
    cfg = Config.load(run / "model" / "config.yaml")
    assert [(c.name, c.kind, c.values) for c in cfg.conditions] == [
        ("Male", "binary", ["0", "1"]), ("race", "categorical", ["Black", "White"])]
