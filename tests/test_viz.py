"""``facediff viz``: forward, reverse, progress and loss figures through the CLI."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.cli import main
from facediff.viz.process import parse_timesteps, spread
from facediff.viz.training import smoothed
from tests.conftest import tiny_args


@pytest.fixture(scope="module")
def run_dir(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step tiny run with sample grids at steps 2, 4, 6 and a validation loss."""
    run = tmp_path_factory.mktemp("viz") / "run"
    assert main(["train", "-q", "--out", str(run),
                 *tiny_args(faces_dir, "train.sample_every=2", "data.val_fraction=0.25",
                            "train.val_every=2"),
                 "--max-steps", "6"]) == 0
    return run


def _png(path: Path) -> np.ndarray:
    assert path.is_file(), path
    arr = np.asarray(Image.open(path).convert("RGB"))
    assert arr.std() > 0, f"{path} is a constant image"
    return arr


def _gif_frames(path: Path) -> list[Image.Image]:
    assert path.is_file(), path
    im = Image.open(path)
    frames = []
    for k in range(im.n_frames):
        im.seek(k)
        frames.append(im.convert("RGB"))
    assert any(np.asarray(f).std() > 0 for f in frames)
    return frames


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("facediff: error:") and "\n" not in err, err
    for w in words:
        assert w in err, err
    return err


# ---- helpers ------------------------------------------------------------------------------

def test_spread_keeps_first_and_last():
    assert spread(3, 10) == [0, 4, 9] or spread(3, 10) == [0, 5, 9]
    assert spread(8, 3) == [0, 1, 2]
    assert spread(2, 50) == [0, 49]
    assert spread(1, 5) == [4]


def test_parse_timesteps():
    assert parse_timesteps("0, 50,999", 1000) == [0, 50, 999]
    from facediff.errors import FacediffError

    for bad in ("0,x", "1000", "-1", ""):
        with pytest.raises(FacediffError):
            parse_timesteps(bad, 1000)


def test_smoothing_does_not_lag_and_skips_nan():
    line = np.linspace(1.0, 0.1, 50)
    assert np.allclose(smoothed(line, 0.9), line)  # a trend is kept, even at the ends
    curve = np.exp(-np.linspace(0, 3, 40))
    assert np.allclose(smoothed(curve, 0.9, log=True), curve)
    noisy = 1 + np.random.default_rng(0).normal(0, 0.1, 200)
    noisy[5] = math.nan
    out = smoothed(noisy, 0.9)
    assert math.isnan(out[5]) and np.nanstd(out) < 0.3 * np.nanstd(noisy)


# ---- forward ------------------------------------------------------------------------------

def test_forward_figure_and_gif(faces_dir: Path, tmp_path: Path):
    out = tmp_path / "fwd.png"
    assert main(["viz", "forward", str(faces_dir), "--t", "0,10,500,999", "--n", "2",
                 "--size", "16", "--out", str(out), "--no-progress", "-q"]) == 0
    h, w, _ = _png(out).shape
    assert 300 < w < 1200 and 200 < h < 1000 and w > h  # 2 rows x 4 columns
    frames = _gif_frames(out.with_suffix(".gif"))
    assert len(frames) == 40  # t = 0 .. 999
    assert frames[0].width >= 2 * 64  # 2 images, 16 px shown at 64
    # the first frame is the clean images, the last pure noise: the noise is far busier
    diff = [np.abs(np.diff(np.asarray(f, dtype=float), axis=1)).mean() for f in frames]
    assert diff[-1] > 2 * diff[0]


def test_forward_compares_schedules(faces_dir: Path, tmp_path: Path):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    base = ["viz", "forward", str(faces_dir), "--n", "1", "--size", "16", "--animation",
            "none", "--no-progress", "-q"]
    assert main([*base, "--out", str(one)]) == 0
    assert main([*base, "--schedule", "cosine,linear", "--out", str(two)]) == 0
    assert _png(two).shape[0] > _png(one).shape[0]  # one row per schedule
    assert not one.with_suffix(".gif").exists()


@pytest.mark.parametrize("t, words", [("0,ten", ["--t", "integers"]),
                                      ("0,1000", ["--t 1000", "0 to 999"])])
def test_forward_bad_t_is_one_line(faces_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str], t: str, words: list):
    assert main(["viz", "forward", str(faces_dir), "--t", t, "--out",
                 str(tmp_path / "f.png"), "-q"]) == 2
    _one_line_error(capsys, *words)
    assert not (tmp_path / "f.png").exists()


def test_forward_bad_schedule(faces_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]):
    assert main(["viz", "forward", str(faces_dir), "--schedule", "cosine,quadratic",
                 "--out", str(tmp_path / "f.png"), "-q"]) == 2
    _one_line_error(capsys, "quadratic", "linear")


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is not None,
                    reason="imageio-ffmpeg is installed")
def test_mp4_without_imageio_ffmpeg_says_how(faces_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]):
    assert main(["viz", "forward", str(faces_dir), "--animation", "mp4", "--out",
                 str(tmp_path / "f.png"), "-q"]) == 2
    _one_line_error(capsys, "pip install imageio-ffmpeg")


# ---- reverse ------------------------------------------------------------------------------

def test_reverse_figure_and_gif(run_dir: Path, tmp_path: Path):
    out = tmp_path / "rev.png"
    assert main(["viz", "reverse", str(run_dir / "model"), "--n", "2", "--steps", "5",
                 "--show", "3", "--device", "cpu", "--out", str(out), "-q"]) == 0
    h, w, _ = _png(out).shape
    assert 250 < w < 1000 and 300 < h < 1500 and h > w  # 4 rows (x_t, x0 per image) x 3
    frames = _gif_frames(out.with_suffix(".gif"))
    assert len(frames) == 5  # one per step
    assert frames[0].width >= 2 * 96  # x_t | x0, 16 px shown at 96


def test_reverse_heun_shows_every_evaluation(run_dir: Path, tmp_path: Path):
    out = tmp_path / "heun.png"
    assert main(["viz", "reverse", str(run_dir), "--n", "1", "--steps", "3", "--sampler",
                 "heun", "--device", "cpu", "--out", str(out), "-q"]) == 0
    _png(out)
    assert len(_gif_frames(out.with_suffix(".gif"))) == 5  # 2N-1 network evaluations


def test_reverse_bad_sampler(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["viz", "reverse", str(run_dir), "--sampler", "rk4", "--out",
                 str(tmp_path / "r.png"), "-q"]) == 2
    _one_line_error(capsys, "rk4", "ddim")


# ---- progress and loss --------------------------------------------------------------------

def test_progress_figure_and_gif(run_dir: Path, tmp_path: Path):
    out = tmp_path / "progress.png"
    assert main(["viz", "progress", str(run_dir), "--out", str(out), "-q"]) == 0
    h, w, _ = _png(out).shape
    assert 400 < w < 1500 and 150 < h < 800 and w > h  # 3 grids in one row
    frames = _gif_frames(out.with_suffix(".gif"))
    assert len(frames) == 3  # grids at steps 2, 4, 6
    assert frames[0].width >= 256


def test_progress_max_frames_picks_first_and_last(run_dir: Path, tmp_path: Path):
    one_row, two = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["viz", "progress", str(run_dir), "--max-frames", "2", "--animation", "none",
                 "--out", str(two), "-q"]) == 0
    assert main(["viz", "progress", str(run_dir), "--animation", "none",
                 "--out", str(one_row), "-q"]) == 0
    assert _png(two).shape[1] < _png(one_row).shape[1]


def test_progress_without_samples_is_one_line(run_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["viz", "progress", str(empty), "--out", str(tmp_path / "p.png"), "-q"]) == 2
    _one_line_error(capsys, "no sample grids", "train.sample_every")
    assert main(["viz", "progress", str(tmp_path / "nope"), "-q"]) == 2
    _one_line_error(capsys, "run dir not found")


def test_loss_figure(run_dir: Path, tmp_path: Path):
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r["val_loss"] for r in rows)  # the fixture logs a validation loss
    out = tmp_path / "loss.png"
    assert main(["viz", "loss", str(run_dir), "--out", str(out), "-q"]) == 0
    h, w, _ = _png(out).shape
    assert 500 < w < 1000 and 300 < h < 800  # two panels: loss and learning rate


def test_loss_with_fid_has_a_third_panel(run_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    text = (run_dir / "logs" / "metrics.csv").read_text().splitlines()
    head = text[0].split(",")
    row = dict.fromkeys(head, "")
    row.update(step="6", fid="312.5", eval_n="16")
    (run / "logs" / "metrics.csv").write_text("\n".join([*text, ",".join(row.values())]) + "\n")
    two, three = tmp_path / "two.png", tmp_path / "three.png"
    assert main(["viz", "loss", str(run_dir), "--out", str(two), "-q"]) == 0
    assert main(["viz", "loss", str(run), "--out", str(three), "-q"]) == 0
    assert _png(three).shape[0] > _png(two).shape[0]


def test_loss_without_metrics_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["viz", "loss", str(run), "-q"]) == 2
    _one_line_error(capsys, "metrics.csv")
    (run / "logs").mkdir()
    (run / "logs" / "metrics.csv").write_text("step,images,loss,lr\n")
    assert main(["viz", "loss", str(run), "-q"]) == 2
    _one_line_error(capsys, "no rows")
    assert main(["viz", "loss", str(run), "--smooth", "1.5", "-q"]) == 2
    _one_line_error(capsys)
