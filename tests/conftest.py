"""Shared fixtures: tiny generated faces and a tiny model config (no real data needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from facediff.config import Config
from facediff.configure import resolve_config
from facediff.data.synthetic import make_faces

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Never write the decoded-image cache into the user's ~/.cache during tests."""
    old = os.environ.get("FACEDIFF_CACHE")
    os.environ["FACEDIFF_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("FACEDIFF_CACHE", None)
    else:
        os.environ["FACEDIFF_CACHE"] = old

# a ~60k-parameter U-Net on 16x16 images: fast enough for many short CPU runs
TINY = [
    "data.image_size=16",
    "model.block_out_channels=[16,32]",
    "model.layers_per_block=1",
    "model.attention_levels=[1]",
    "model.attention_head_dim=16",
    "model.norm_num_groups=8",
    "train.batch_size=8",
    "train.lr=0.002",
    "train.warmup_steps=2",
    "train.log_every=2",
    "train.sample_every=1000",
    "train.sample_n=4",
    "train.checkpoint_every=1000",
    "sample.steps=4",
]


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("faces")
    make_faces(d, 24, size=24, seed=1)
    return d


def tiny_config(data: Path | None = None, *extra: str) -> Config:
    overrides = list(TINY) + list(extra)
    if data is not None:
        overrides.insert(0, f"data.path={data}")
    return resolve_config(preset="tiny", overrides=overrides)


def tiny_args(data: Path | None = None, *extra: str) -> list[str]:
    """CLI arguments for a tiny training run."""
    args = ["--preset", "tiny", "--no-progress"]
    if data is not None:
        args += ["--data", str(data)]
    for o in [*TINY, *extra]:
        args += ["--set", o]
    return args


def plain_faces(folder: Path, n: int = 8, size: int = 16) -> Path:
    """``n`` flat-coloured images 0.png .. (n-1).png in ``folder`` (for labels-file tests)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (30 * i % 256, 0, 0)).save(folder / f"{i}.png")
    return folder


def assert_one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str],
                           fragment: str) -> None:
    """``facediff ARGS`` fails with exit 2 and one stderr line holding ``fragment``."""
    from facediff.cli import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert fragment in err and "Traceback" not in err
