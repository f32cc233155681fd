"""Two CPU processes (DDP over gloo via torchrun) train exactly what one process trains."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_and_two(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``facediff ARGS`` in one process (into tmp/one) and in two over torchrun (into
    tmp/two); both must succeed. Returns the two-process run."""
    one = subprocess.run([sys.executable, "-m", "facediff", *args, "--out",
                          str(tmp_path / "one")], capture_output=True, text=True, env=ENV,
                         timeout=180)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), "-m", "facediff", *args,
         "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=ENV, timeout=300)
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
        capture_output=True, text=True, env=ENV, timeout=180)
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
