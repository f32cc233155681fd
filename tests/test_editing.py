"""Interpolation and editing on a tiny trained conditional model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facediff
from facediff.cli import main
from facediff.diffusion.editing import (
    ddim_generate,
    ddim_invert,
    edit_photo,
    interpolate_attribute,
    interpolate_seeds,
    load_photo,
    slerp,
)
from facediff.diffusion.samplers import SamplingSettings
from facediff.train.trainer import Trainer
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("edit")
    d = tmp / "faces"
    d.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        smiling, hair = i % 2, ["blond", "dark"][(i // 2) % 2]
        arr = np.full((16, 16, 3), (230, 200, 80) if hair == "blond" else (30, 20, 10), np.uint8)
        arr[10:13, 4:12] = 255 * smiling
        arr[3:6, 3 + i % 4:6 + i % 4] = (90, 140, 200)  # a patch that moves between images
        arr += rng.integers(0, 8, arr.shape, dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{i}.png")
        rows.append(f"{i}.png,{smiling},{hair}")
    (tmp / "l.csv").write_text("file,Smiling,hair\n" + "\n".join(rows) + "\n")
    cfg = tiny_config(d, f"data.labels={tmp / 'l.csv'}", "train.max_steps=200",
                      "train.lr=0.003", "train.batch_size=16",
                      "train.ema_halflife_images=500")
    Trainer(cfg, tmp / "run", progress=False).fit()
    return tmp / "run", d


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert abs(mid.norm() - a.norm()) / a.norm() < 0.1  # a straight line would shrink it


def test_seed_interpolation_ends_at_the_two_seeds(trained):
    # fp32: the frames are sampled in one batch and the ends alone, exact only in fp32
    model = facediff.load(trained[0], device="cpu", precision="fp32")
    frames = interpolate_seeds(model, 3, 9, 4, settings=SamplingSettings(steps=5))
    a = model.sample_tensor(1, steps=5, seed=3)
    b = model.sample_tensor(1, steps=5, seed=9)
    assert frames.shape[0] == 4
    assert (frames[0].int() - a[0].int()).abs().max() <= 1
    assert (frames[-1].int() - b[0].int()).abs().max() <= 1
    assert (frames[1].int() - frames[0].int()).abs().float().mean() > 0


def test_attribute_sweep_ends_at_off_and_on(trained):
    model = facediff.load(trained[0], device="cpu")
    sweep = interpolate_attribute(model, "hair", 3, rows=1,
                                  settings=SamplingSettings(seed=2, steps=5, guidance=2.0))
    blond = model.sample_tensor(1, steps=5, seed=2, attrs=["hair=blond"], guidance=2.0)
    dark = model.sample_tensor(1, steps=5, seed=2, attrs=["hair=dark"], guidance=2.0)
    assert (sweep[0].int() - blond[0].int()).abs().max() <= 1
    assert (sweep[-1].int() - dark[0].int()).abs().max() <= 1
    brightness = sweep.float().mean(dim=(1, 2, 3))
    assert brightness[0] > brightness[1] > brightness[2]  # blond -> dark, smoothly


def test_inversion_then_regeneration_reconstructs_the_photo(trained):
    """Stated threshold: reconstruction MSE (in [-1, 1] units) below 0.02, and under a fifth
    of the MSE between the photo and another training image."""
    run, faces = trained
    model = facediff.load(run, device="cpu")
    photo = load_photo(faces / "5.png", model)
    other = load_photo(faces / "6.png", model)
    cond = model.cond(torch.tensor([1, 1]))  # 5.png: smiling, dark
    xT = ddim_invert(model, photo, cond, steps=50)
    recon = ddim_generate(model, xT, cond, steps=50, guidance=1.0)
    err = float(((recon - photo) ** 2).mean())
    baseline = float(((other - photo) ** 2).mean())
    assert err < 0.02 and err < baseline / 5, (err, baseline)


def test_edit_changes_the_attribute(trained, tmp_path: Path):
    run, faces = trained
    model = facediff.load(run, device="cpu")
    photo = load_photo(faces / "1.png", model)  # smiling, blond
    src = torch.tensor([1, 0])
    after = edit_photo(model, photo, src, torch.tensor([1, 1]), method="ddim",
                       settings=SamplingSettings(steps=30, guidance=3.0))
    assert after.float().mean() < photo.add(1).mul(127.5).mean() - 30  # dark now
    sd = edit_photo(model, photo, src, torch.tensor([1, 1]), method="sdedit", strength=0.8,
                    settings=SamplingSettings(steps=30, guidance=3.0))
    assert sd.shape == (16, 16, 3)
    out = tmp_path / "e.png"
    # the synthetic faces have no face a detector finds: the centre crop
    assert main(["edit", str(faces / "1.png"), "--model", str(run), "--attr", "hair=dark",
                 "--from-attr", "hair=blond", "--steps", "10", "--out", str(out),
                 "--no-align"]) == 0
    assert Image.open(out).size == Image.open(faces / "1.png").size  # the photo, edited
    assert Image.open(tmp_path / "e-crops.png").size == (2 * 16 + 3 * 2, 16 + 2 * 2)


def test_cli_interpolate_and_attribute_grid(trained, tmp_path: Path):
    run, _ = trained
    assert main(["interpolate", str(run), "--frames", "3", "--steps", "3",
                 "--out", str(tmp_path / "i.png")]) == 0
    assert main(["interpolate", str(run), "--sweep", "Smiling", "--frames", "3", "--rows", "2",
                 "--steps", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size == (3 * 18 + 2, 2 * 18 + 2)
    assert main(["sample", str(run), "--attr-grid", "all", "--n", "2", "--steps", "3",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    grid = np.asarray(Image.open(tmp_path / "attr_grid.png"))
    assert grid.shape[0] == 4 * 18 + 2 and grid.std() > 0  # Smiling off/on, blond, dark
    assert main(["interpolate", str(run), "--seeds", "1"]) == 2
    assert main(["interpolate", str(run), "--sweep", "Smilng"]) == 2
