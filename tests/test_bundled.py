"""The bundled pretrained models: present, small, loadable, and used when no model is given."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import facediff
from facediff.assets import (
    BUNDLED,
    CONDITIONAL,
    CONDITIONAL_FAST,
    GRID,
    RELEASE,
    UNCONDITIONAL,
    UNCONDITIONAL_32,
    UNCONDITIONAL_FAST,
    describe,
    fast_default,
    resolve_model,
)
from facediff.cli import main
from facediff.errors import ModelNotFoundError

REPO = Path(__file__).resolve().parents[1]
CARD_FIELDS = ["research", "parameters", "images seen", "FID", "KID", "precision", "recall",
               "sampler", "command"]


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_weights_are_small_fp16_with_a_card(name: str):
    b = BUNDLED[name]
    weights = b.path / "weights.safetensors"
    assert weights.stat().st_size <= 25 * 2**20
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}
    card = b.card.read_text().lower()
    for field in CARD_FIELDS:
        assert field.lower() in card, f"{name}'s card does not mention {field!r}"
    assert "not measured" not in card and "n1000_" not in card  # no placeholder left
    if facediff.load(name).spec.names:
        # the yardstick: the shipped classifier's reading of real photos it never trained on
        assert "attribute accuracy" in card
        assert re.search(r"classifier on (the )?[\d,]+ real (held-out |test )?photos", card)
    assert name in describe(b)


def test_the_release_models_fit_their_budget_and_show_their_faces():
    """Issue 21: at most 25 MB each (weights and classifier), 60 MB together; each card
    shows its grid of 16 faces, shipped beside it."""
    sizes = {b.name: sum(f.stat().st_size for f in b.path.rglob("*") if f.is_file())
             for b in RELEASE}
    assert all(s <= 25 * 2**20 for s in sizes.values()), sizes
    assert sum(sizes.values()) <= 60 * 2**20, sizes
    for b in RELEASE:
        assert b.name in BUNDLED
        with Image.open(b.path / GRID) as grid:
            size = facediff.load(b.name).config.data.image_size
            assert grid.size[0] >= 4 * size and grid.size[1] >= 4 * size
        assert f"]({GRID})" in b.card.read_text(), f"{b.name}'s card does not show {GRID}"


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_model_samples_finite_images_in_two_steps(name: str):
    model = facediff.load(name, device="cpu")
    assert model.source == f"bundled {name}"
    seen: list[torch.Tensor] = []
    # its first condition set to its second value (binary: on; categorical, e.g. age: 3-9)
    first = model.spec.conditions[0] if model.spec.names else None
    attrs = {first.name: first.values[1]} if first else None
    imgs = model.sample_tensor(2, steps=2, seed=0, batch_size=2, attrs=attrs,
                               callback=lambda i, n, t, x, x0: seen.append(x0))
    size = model.config.data.image_size
    assert imgs.shape == (2, size, size, 3) and imgs.dtype == torch.uint8
    assert len(seen) == 2 and all(bool(torch.isfinite(x0).all()) for x0 in seen)
    assert float(imgs.float().std()) > 5  # an image, not a constant


def test_defaults_pick_the_bundled_models():
    assert resolve_model(None) == UNCONDITIONAL.path
    assert resolve_model(None, conditional=True) == CONDITIONAL.path
    assert not facediff.load(device="cpu").spec.names
    assert facediff.load(conditional=True, device="cpu").spec.names
    with pytest.raises(ModelNotFoundError, match="bundled models"):
        resolve_model("no-such-model")


@pytest.mark.parametrize(("fast", "teacher"), [(UNCONDITIONAL_FAST, UNCONDITIONAL_32),
                                              (CONDITIONAL_FAST, CONDITIONAL)])
def test_each_model_has_a_4_step_companion_that_the_app_serves(fast, teacher):
    """The distilled companions: 4 DDIM steps from their own config, the teacher's
    conditions, the app's default, and their photos edited by the bundled teacher."""
    from facediff.api import load_editor

    assert fast.name in BUNDLED
    model = facediff.load(fast.name, device="cpu")
    s, d = model.config.sample, model.config.distill
    assert (s.sampler, s.steps, s.guidance) == ("ddim", 4, 1.0)
    assert d.teacher == teacher.name and d.teacher_digest
    full = facediff.load(teacher.name, device="cpu")
    assert model.spec.names == full.spec.names
    assert fast_default(conditional=bool(full.spec.names)) == fast.path
    assert load_editor(model).source == f"bundled {teacher.name}"


def test_a_path_on_disk_wins_over_a_bundled_name(tmp_path: Path, monkeypatch):
    shutil.copytree(CONDITIONAL.path, tmp_path / UNCONDITIONAL.name)
    monkeypatch.chdir(tmp_path)
    assert facediff.load(UNCONDITIONAL.name, device="cpu").spec.names  # the local copy


def test_sample_command_without_a_model(tmp_path: Path, capsys):
    out = tmp_path / "faces"
    assert main(["sample", "--n", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    assert f"bundled {UNCONDITIONAL.name}" in capsys.readouterr().out
    assert len(list(out.glob("sample_*.png"))) == 2 and (out / "grid.png").is_file()
    assert main(["sample", "--n", "2", "--steps", "2", "--out", str(out), "--no-progress",
                 "--attr", "Smiling=1"]) == 0
    assert f"bundled {CONDITIONAL.name}" in capsys.readouterr().out


def test_models_command_lists_the_bundled_models(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in BUNDLED) and "Smiling" in text


def test_an_installed_wheel_ships_and_samples_the_bundled_models(tmp_path: Path):
    """Build a wheel from the source tree, install it (not editable), sample from it."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "facediff", src / "facediff",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True)
    wheel = next((tmp_path / "dist").glob("facediff-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for b in BUNDLED.values():
        for f in ("config.yaml", "weights.safetensors", "MODEL_CARD.md"):
            assert f"facediff/assets/{b.name}/{f}" in names
    for b in RELEASE:
        assert f"facediff/assets/{b.name}/{GRID}" in names
    for f in ("classifier.json", "weights.safetensors"):  # what sample --like reads with
        assert f"facediff/assets/{CONDITIONAL.name}/classifier/{f}" in names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    code = ("import facediff, sys; from facediff.cli import main; "
            f"assert facediff.__file__.startswith({str(site)!r}), facediff.__file__; "
            "sys.exit(main(['sample', '--n', '1', '--steps', '2', '--out', 'out', "
            "'--no-progress']))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"bundled {UNCONDITIONAL.name}" in run.stdout
    assert (tmp_path / "out" / "sample_0001.png").is_file()
