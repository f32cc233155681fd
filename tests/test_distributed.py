"""Two CPU processes (gloo via torchrun) train, sample and evaluate what one process does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import tiny_args


def _env() -> dict[str, str]:
    """The subprocesses' environment, read when they start (the private cache included)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_and_two(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``facediff ARGS`` in one process (into tmp/one) and in two over torchrun (into
    tmp/two); both must succeed. Returns the two-process run."""
    one = subprocess.run([sys.executable, "-m", "facediff", *args, "--out",
                          str(tmp_path / "one")], capture_output=True, text=True, env=_env(),
                         timeout=180)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), "-m", "facediff", *args,
         "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=_env(), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    return two


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_processes_match_one(faces_dir: Path, tmp_path: Path):
    args = ["train", *tiny_args(faces_dir), "--max-steps", "6", "--set", "train.batch_size=8",
            "--set", "train.checkpoint_every=3", "--set", "data.val_fraction=0.25",
            "--set", "train.val_every=3", "--set", "train.sample_every=3",
            # fp32: bf16 autocast (the CPU default where the CPU has it) rounds each rank's
            # half-batch differently, which this comparison would mistake for a DDP error
            "--set", "train.mixed_precision=no"]
    two = _one_and_two(args, tmp_path)
    assert "2 process(es)" in two.stderr
    assert (tmp_path / "two" / "samples" / "step-0000003.png").is_file()
    assert two.stdout.count("finished at step 6") == 1  # only rank 0 reports and writes
    vals = []
    for name in ("one", "two"):
        rows = (tmp_path / name / "logs" / "metrics.csv").read_text().splitlines()
        vals.append([float(r.split(",")[6]) for r in rows[1:] if r.split(",")[6]])
    assert len(vals[0]) == 2 and vals[0] == pytest.approx(vals[1], rel=1e-5)  # split val loss
    for rel in ("model/weights.safetensors", "checkpoints/step-0000006/model.safetensors",
                "checkpoints/step-0000003/ema.safetensors"):
        a, b = load_file(str(tmp_path / "one" / rel)), load_file(str(tmp_path / "two" / rel))
        assert a.keys() == b.keys()
        # each rank trains on half of every batch; DDP's average equals the one-process step
        # (up to float summation order, which Adam's normalisation amplifies a little)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff < 1e-4, (rel, diff)
    assert not list((tmp_path / "two" / "checkpoints").glob(".tmp-*"))


def test_ranks_take_disjoint_parts_of_each_batch():
    from facediff.train.trainer import rank_slice

    for world, accum, batch in [(1, 1, 8), (2, 1, 8), (2, 2, 16), (4, 2, 32)]:
        micro = batch // accum
        taken = [i for m in range(accum) for r in range(world)
                 for i in range(batch)[rank_slice(m, micro, r, world)]]
        assert sorted(taken) == list(range(batch))  # every sample once, none twice


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_a_write_failure_on_rank_0_stops_every_rank_with_one_line(faces_dir: Path,
                                                                   tmp_path: Path):
    """Only rank 0 writes; when a write fails there, the other rank must not wait at a
    collective for ever: every rank stops with the same one line, exit 2."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("not a folder")  # the first checkpoint cannot be made
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), "-m", "facediff", "train", *tiny_args(faces_dir),
         "--max-steps", "6", "--set", "train.checkpoint_every=2", "--out", str(run)],
        capture_output=True, text=True, env=_env(), timeout=180)
    assert r.returncode != 0, r.stderr[-3000:]
    # both ranks said it (rank 1 learnt it from rank 0; the two may share a line of the one
    # stderr pipe) and neither died in facediff's code (the launcher's own report of the
    # exit codes follows, with its traceback)
    assert r.stderr.count("facediff: error: cannot write checkpoint") == 2, r.stderr[-3000:]
    assert "facediff/train/" not in r.stderr, r.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
@pytest.mark.parametrize("kind", ["tiny", "kl"])
def test_two_processes_train_the_autoencoder_as_one_does(faces_dir: Path, tmp_path: Path,
                                                         kind: str):
    """The autoencoder task on the same trainer: DDP over both networks (the discriminator's
    term switched on at step 2; AutoencoderKL's posterior noise drawn for the global batch)
    gives one process's weights."""
    ae = ["task=autoencoder", f"autoencoder.kind={kind}", "autoencoder.block_out_channels=[8,8]",
          "autoencoder.blocks_per_level=1", "autoencoder.disc_start=2",
          "autoencoder.disc_width=8", "autoencoder.disc_layers=2", "train.batch_size=8",
          "train.mixed_precision=no", "train.checkpoint_every=2"]
    args = ["autoencoder", "train", *tiny_args(faces_dir, *ae), "--max-steps", "4"]
    two = _one_and_two(args, tmp_path)
    assert "2 process(es)" in two.stderr
    for rel in ("model/weights.safetensors", "checkpoints/step-0000004/model.safetensors"):
        a, b = load_file(str(tmp_path / "one" / rel)), load_file(str(tmp_path / "two" / rel))
        assert a.keys() == b.keys()
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff < 1e-4, (rel, diff)


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_processes_sample_the_images_one_process_samples(tmp_path: Path):
    """Batches go to the processes whole (3 batches of 2 over 2 processes), so each image
    is the same as one process's, in the default precision (bf16 here) too."""
    # -n: torchrun and accelerate launch take --n for an abbreviation of their own options
    two = _one_and_two(["sample", "-n", "5", "--batch-size", "2", "--steps", "2",
                        "--no-progress"], tmp_path)
    one, both = _pngs(tmp_path / "one"), _pngs(tmp_path / "two")
    assert sorted(one) == sorted(both) == ["grid.png"] + \
        [f"sample_{i:04d}.png" for i in range(1, 6)]
    for name in one:
        np.testing.assert_array_equal(one[name], both[name], err_msg=name)
    assert two.stdout.count("wrote 5 images and grid.png") == 1  # the main process reports


class _Features(torch.nn.Module):
    """A feature network for ``eval --inception`` in a subprocess: a strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_processes_evaluate_as_one_does(faces_dir: Path, tmp_path: Path):
    torch.manual_seed(0)
    net = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(_Features()), str(net))
    two = _one_and_two(["eval", "celebahq-32", "--ref", str(faces_dir), "-n", "5",
                        "--batch-size", "2", "--steps", "2", "--inception", str(net),
                        "--save-samples", "--no-progress"], tmp_path)
    rows = [json.loads((tmp_path / d / "results.json").read_text())[0] for d in ("one", "two")]
    assert rows[0]["n"] == rows[1]["n"] == 5
    assert rows[1]["processes"] == 2 and "processes" not in rows[0]
    for key in ("fid", "kid", "precision", "recall"):
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-6, abs=1e-9), key
    (one,), (both,) = ((tmp_path / d / "samples").iterdir() for d in ("one", "two"))
    a, b = _pngs(one), _pngs(both)
    assert sorted(a) == sorted(b) == [f"{i:06d}.png" for i in range(5)]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert two.stdout.count("wrote ") == 1
