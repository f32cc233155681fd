from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facediff
from facediff.assets import BUNDLED
from facediff.cli import main
from tests.conftest import assert_one_line_exit_2, tiny_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facediff", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def trained(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(run_dir), *tiny_args(faces_dir),
                 "--max-steps", "6"]) == 0
    return run_dir


def test_train_writes_a_complete_run(trained: Path):
    for p in ("config.yaml", "model/config.yaml", "model/weights.safetensors",
              "checkpoints/step-0000006/state.pt", "logs/metrics.csv",
              "samples/step-0000006.png"):
        assert (trained / p).is_file(), p


def test_sample_writes_numbered_images_and_a_grid(trained: Path, tmp_path: Path, capsys):
    out = tmp_path / "s"
    assert main(["sample", str(trained), "--n", "5", "--out", str(out), "--steps", "3",
                 "--batch-size", "2", "--sampler", "ddim", "--no-progress"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["grid.png"] + [f"sample_{i:04d}.png" for i in range(1, 6)]
    img = Image.open(out / "sample_0001.png")
    assert img.size == (16, 16) and img.mode == "RGB"
    assert np.asarray(img).std() > 0
    assert "wrote 5 images" in capsys.readouterr().out


def test_python_api_matches_the_cli(trained: Path, tmp_path: Path):
    model = facediff.load(trained, device="cpu")
    imgs = model.sample(n=3, steps=3, seed=0, sampler="dpmpp")
    assert len(imgs) == 3 and imgs[0].size == (16, 16)
    out = tmp_path / "s"
    main(["sample", str(trained), "--n", "3", "--out", str(out), "--steps", "3",
          "--sampler", "dpmpp", "--no-progress", "--no-grid"])
    assert np.array_equal(np.asarray(imgs[2]), np.asarray(Image.open(out / "sample_0003.png")))


def test_export_half_and_sample_from_export(trained: Path, tmp_path: Path):
    assert main(["export", str(trained), "--out", str(tmp_path / "m"), "--half"]) == 0
    model = facediff.load(tmp_path / "m", device="cpu")
    assert model.step == 6  # the step travels with the weights (warm starts count on it)
    assert len(model.sample(n=1, steps=2)) == 1


def test_config_lists_and_prints(capsys):
    assert main(["config", "--list"]) == 0
    assert "simpsons64" in capsys.readouterr().out
    assert main(["config", "--preset", "tiny", "--set", "train.lr=1e-3"]) == 0
    assert "lr: 0.001" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["train", "--out", "{tmp}/r", "--data", "{tmp}/missing"], "data folder not found"),
    (["train", "--out", "{tmp}/r", "--preset", "nope", "--data", "{tmp}"], "unknown preset"),
    (["train", "--out", "{tmp}/r", "--preset", "tiny", "--set", "train.bogus=1"],
     "unknown config key"),
    (["train", "--out", "{tmp}/r", "--preset", "tiny"], "no data path"),
    (["sample", "{tmp}/missing-model"], "model not found"),
    (["sample", "{tmp}", "--n", "0"], "--n must be at least 1"),
    (["sample", "{tmp}", "--n", "x"], "--n must be an integer"),
    (["sample", "{tmp}", "--steps", "-3"], "--steps must be at least 1"),
    (["train", "--out", "{tmp}/r", "--time-limit", "0"], "--time-limit must be a positive"),
    (["train", "--out", "{tmp}/r", "--time-limit", "soon"], "--time-limit must be a number"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, args, fragment):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_one_line_exit_2(args, capsys, fragment)


def test_errors_from_a_real_process_have_no_traceback(tmp_path: Path):
    r = run("sample", str(tmp_path / "nothing"), "--n", "4")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"facediff: error: model not found: {tmp_path / 'nothing'} "
        f"(bundled models: {', '.join(BUNDLED)}; or a Hugging Face Hub id, owner/name)"]


def test_sample_on_unknown_sampler(trained: Path, tmp_path: Path, capsys):
    assert main(["sample", str(trained), "--sampler", "plms", "--out", str(tmp_path)]) == 2
    assert "unknown sampler 'plms'; choose from ddpm" in capsys.readouterr().err


def test_sigterm_checkpoints_and_exits(faces_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "facediff", "train", "--out", str(out),
                          *tiny_args(faces_dir), "--max-steps", "100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 90
    csv_path = out / "logs" / "metrics.csv"
    while time.time() < deadline:  # wait until it is really training
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > 2:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "interrupted" in stdout and "resume" in stdout
    from facediff.train.checkpoint import latest_checkpoint

    assert latest_checkpoint(out) is not None
    assert (out / "model" / "weights.safetensors").is_file()


def test_data_paths_are_taken_literally(faces_dir: Path, tmp_path: Path):
    import shutil

    odd = tmp_path / "my faces #1"
    shutil.copytree(faces_dir, odd)
    run_dir = tmp_path / "run"
    assert main(["train", "--out", str(run_dir), *tiny_args(odd), "--max-steps", "1"]) == 0
    from facediff.config import Config

    assert Config.load(run_dir / "config.yaml").data.path == str(odd.resolve())


def test_unknown_device_is_a_clear_error(trained: Path, capsys):
    assert main(["sample", str(trained), "--device", "gpu"]) == 2
    assert "unknown --device" in capsys.readouterr().err
