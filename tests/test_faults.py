"""Faults a long training run meets, each reproduced on tiny data, with the outcome that keeps
the run: divergence, a full disk, corrupt checkpoints and exports, two trainers on one run
dir, bad numbers and bad output paths, interrupted writes. (The slow ones, repeated
``kill -9`` and a real full filesystem, are in bench/faults.py.)"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facediff.cli import main
from facediff.errors import FacediffError
from facediff.train import checkpoint as ck
from facediff.train.lock import RunLock
from facediff.train.trainer import Trainer
from tests.conftest import tiny_args, tiny_config


def _one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.startswith("facediff: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _train_args(run: Path, faces: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--out", str(run), *tiny_args(faces), "--max-steps", str(steps),
            "--set", "train.checkpoint_every=2", "-q", *extra]


@pytest.fixture
def run_dir(faces_dir: Path, tmp_path: Path) -> Path:
    """A run with good checkpoints at steps 2 and 4 and an export at step 4."""
    run = tmp_path / "run"
    assert main(_train_args(run, faces_dir, 4)) == 0
    return run


def _finite_run(run: Path) -> None:
    for _, c in ck.list_checkpoints(run):
        for f in ("model.safetensors", "ema.safetensors"):
            assert not ck.non_finite(ck.load_file(str(c / f))), c
    assert not ck.non_finite(ck.load_file(str(run / "model" / "weights.safetensors")))


# ---- divergence -------------------------------------------------------------------------

def test_divergence_stops_and_keeps_the_last_good_checkpoint(run_dir: Path, faces_dir: Path,
                                                              tmp_path: Path, capsys):
    before = {c.name for _, c in ck.list_checkpoints(run_dir)}
    code = main(_train_args(run_dir, faces_dir, 60, "--set", "train.lr=1000",
                            "--set", "train.max_nonfinite_steps=3"))
    assert code == 2
    line = _one_line(capsys, "diverged", "NaN or inf", "kept step-")
    _finite_run(run_dir)  # nothing non-finite was written, and rotation kept a good one
    kept = line.split("kept ")[1].split()[0]
    assert ck.latest_checkpoint(run_dir).name == kept and before <= {"step-0000002", kept} | \
        {c.name for _, c in ck.list_checkpoints(run_dir)} | before
    rows = list(csv.DictReader(open(run_dir / "logs" / "metrics.csv")))
    assert int(rows[-1]["skipped"]) >= 3
    # the model still samples real images, and the same command with a sane lr resumes
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "2", "--no-progress",
                 "--out", str(tmp_path / "s")]) == 0
    step = ck.list_checkpoints(run_dir)[-1][0]
    assert main(_train_args(run_dir, faces_dir, step + 2)) == 0
    assert ck.latest_checkpoint(run_dir).name == ck.checkpoint_name(step + 2)


def test_a_nonfinite_step_is_skipped_and_counted(faces_dir: Path, tmp_path: Path):
    trainer = Trainer(tiny_config(faces_dir, "train.max_steps=6"), tmp_path / "r",
                      progress=False)
    real = trainer.objective.loss
    calls = []

    def nan_on_third(net, x0, noise, t, *, labels=None):
        calls.append(1)
        loss = real(net, x0, noise, t, labels=labels)
        return loss * float("nan") if len(calls) == 3 else loss

    trainer.objective.loss = nan_on_third
    result = trainer.fit()
    assert result.reason == "finished" and result.step == 6 and trainer.skipped_steps == 1
    assert trainer.ema.optimization_step == 5  # the EMA never saw the skipped step
    assert not ck.non_finite(dict(trainer.net.state_dict()))
    assert all(torch.isfinite(p).all() for p in trainer.ema.shadow_params)


def test_a_blown_up_but_finite_loss_never_rotates_the_good_checkpoints(run_dir: Path,
                                                                        faces_dir: Path,
                                                                        capsys):
    """lr=1 ruins the weights without NaN at first: the loss jumps to many times its best.
    Checkpoints are held back from then on, so the good ones are never rotated away."""
    good = ck.load_checkpoint(ck.latest_checkpoint(run_dir))["ema"]
    code = main(_train_args(run_dir, faces_dir, 200, "--set", "train.lr=1",
                            "--set", "train.max_nonfinite_steps=4"))
    assert code == 2
    _one_line(capsys, "diverged", "kept step-0000004 and the export")
    assert [s for s, _ in ck.list_checkpoints(run_dir)] == [2, 4]
    kept = ck.load_checkpoint(ck.latest_checkpoint(run_dir))["ema"]
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_nonfinite_weights_are_never_written(tmp_path: Path):
    good = {"w": torch.ones(2)}
    ck.save_checkpoint(tmp_path, 1, tiny_config(), model_state=good, ema_state=good,
                       train_state={}, keep=1)
    bad = {"w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(ck.NonFiniteError, match="NaN or inf"):
        ck.save_checkpoint(tmp_path, 2, tiny_config(), model_state=bad, ema_state=good,
                           train_state={}, keep=1)
    with pytest.raises(ck.NonFiniteError):
        ck.export_model(tmp_path / "m", tiny_config(), {"w": torch.tensor([float("inf")])})
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [1]  # rotation kept the good one
    assert not (tmp_path / "m").exists()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_an_export_with_nan_weights_is_one_line(run_dir: Path, tmp_path: Path, capsys):
    model = run_dir / "model"
    w = ck.load_file(str(model / "weights.safetensors"))
    w[next(iter(w))] = torch.full_like(w[next(iter(w))], float("nan"))
    ck.save_file(w, str(model / "weights.safetensors"))
    assert main(["sample", str(model), "--n", "1", "--out", str(tmp_path / "s")]) == 2
    _one_line(capsys, "weights.safetensors", "NaN or inf")


# ---- a full disk and other write failures ------------------------------------------------

def _no_space(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("what", ["save_file", "torch.save"])
def test_a_full_disk_is_one_line_and_the_run_resumes(run_dir: Path, faces_dir: Path,
                                                      monkeypatch, capsys, what: str):
    if what == "save_file":
        monkeypatch.setattr(ck, "save_file", _no_space)
    else:  # what torch.save raises on a full disk
        def unexpected_pos(*_a, **_k):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos")

        monkeypatch.setattr(ck.torch, "save", unexpected_pos)
    assert main(_train_args(run_dir, faces_dir, 8)) == 2
    line = _one_line(capsys, "cannot write checkpoint", str(run_dir / "checkpoints"))
    assert ("No space left on device" in line) == (what == "save_file")
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # cleaned up
    assert ck.latest_checkpoint(run_dir).name == "step-0000004"
    monkeypatch.undo()
    assert main(_train_args(run_dir, faces_dir, 8)) == 0  # the same command resumes
    assert ck.latest_checkpoint(run_dir).name == "step-0000008"


def test_a_failed_export_keeps_the_previous_one(run_dir: Path, monkeypatch):
    before = (run_dir / "model" / "weights.safetensors").read_bytes()
    monkeypatch.setattr(ck, "save_file", _no_space)
    with pytest.raises(ck.WriteError, match="cannot write exported model"):
        ck.export_model(run_dir / "model", tiny_config(), {"w": torch.ones(1)})
    assert (run_dir / "model" / "weights.safetensors").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]


# ---- corrupt checkpoints and exports -----------------------------------------------------

@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "state.pt"])
def test_a_truncated_latest_checkpoint_falls_back(run_dir: Path, faces_dir: Path, caplog,
                                                  capsys, name: str):
    f = ck.latest_checkpoint(run_dir) / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    found = ck.load_latest_checkpoint(run_dir)
    assert found is not None and found[0].name == "step-0000002"
    said = caplog.text + capsys.readouterr().err  # the CLI's handler, once main() has run
    assert "skipping checkpoint step-0000004" in said and name in said
    assert main(_train_args(run_dir, faces_dir, 6)) == 0  # resumes from step 2
    assert ck.latest_checkpoint(run_dir).name == "step-0000006"
    # the damaged one was moved aside (not written over, not counted), not deleted
    assert (run_dir / "checkpoints" / ".corrupt-step-0000004" / name).is_file()


def test_a_checkpoint_that_cannot_be_read_now_is_not_skipped(run_dir: Path, faces_dir: Path,
                                                             monkeypatch, capsys):
    """An I/O error is not damage: one line, and the checkpoint stays where it is."""
    real = ck.load_file

    def eio(path, *a, **k):
        if "step-0000004" in str(path):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(path, *a, **k)

    monkeypatch.setattr(ck, "load_file", eio)
    assert main(_train_args(run_dir, faces_dir, 6)) == 2
    _one_line(capsys, "cannot read", "step-0000004", "Input/output error")
    assert ck.latest_checkpoint(run_dir).name == "step-0000004"


def test_no_readable_checkpoint_is_one_line(run_dir: Path, faces_dir: Path, capsys):
    for _, c in ck.list_checkpoints(run_dir):
        (c / "state.pt").write_bytes(b"")
    assert main(_train_args(run_dir, faces_dir, 6)) == 2
    _one_line(capsys, "no checkpoint", "can be read", "state.pt")


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\""])
def test_a_broken_export_is_one_line_and_a_run_falls_back(run_dir: Path, tmp_path: Path,
                                                          capsys, caplog, content: bytes):
    (run_dir / "model" / "weights.safetensors").write_bytes(content)
    assert main(["sample", str(run_dir / "model"), "--n", "1", "--out",
                 str(tmp_path / "s")]) == 2
    _one_line(capsys, "cannot read", "weights.safetensors")
    # the run dir itself still gives a model: its newest checkpoint
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "2", "--no-progress",
                 "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr()
    assert "skipping" in caplog.text + out.err and "step-0000004" in out.out


def test_weights_that_do_not_fit_the_config_are_one_line(run_dir: Path, tmp_path: Path,
                                                         capsys):
    ck.save_file({"w": torch.ones(1)}, str(run_dir / "model" / "weights.safetensors"))
    assert main(["sample", str(run_dir / "model"), "--n", "1", "--out",
                 str(tmp_path / "s")]) == 2
    _one_line(capsys, "do not fit", str(run_dir / "model"))


# ---- two trainers ------------------------------------------------------------------------

def test_a_second_trainer_is_refused(run_dir: Path, faces_dir: Path, capsys):
    with RunLock(run_dir):
        assert main(_train_args(run_dir, faces_dir, 6)) == 2
    _one_line(capsys, "is being trained by another process", f"pid {os.getpid()}")
    assert ck.latest_checkpoint(run_dir).name == "step-0000004"  # untouched
    assert main(_train_args(run_dir, faces_dir, 6)) == 0  # released: it runs


def test_a_lock_left_by_a_dead_process_is_taken_over(run_dir: Path, faces_dir: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from facediff.train.lock import RunLock; "
         f"RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FacediffError, match="another process"):
        RunLock(run_dir).acquire()
    holder.kill()  # kill -9: it never releases the lock itself
    holder.wait()
    assert main(_train_args(run_dir, faces_dir, 6)) == 0


def test_a_filesystem_without_flock_uses_a_lock_file(tmp_path: Path, monkeypatch):
    import facediff.train.lock as lock_module

    def no_flock(*_a):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").is_file()
        with pytest.raises(FacediffError, match="another process"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()  # the lock file itself was the lock


def test_a_row_cut_by_a_crash_does_not_merge_with_the_next(run_dir: Path, faces_dir: Path):
    csv_path = run_dir / "logs" / "metrics.csv"
    with open(csv_path, "a") as f:
        f.write("5,40,0.3")  # no newline: the disk filled up mid-row
    assert main(_train_args(run_dir, faces_dir, 6)) == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert rows[-1]["step"] == "6" and rows[-1]["loss"]


def test_metrics_are_appended_not_rewritten(run_dir: Path, faces_dir: Path):
    csv_path = run_dir / "logs" / "metrics.csv"
    before = csv_path.read_bytes()
    inode = csv_path.stat().st_ino
    assert main(_train_args(run_dir, faces_dir, 6)) == 0
    after = csv_path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert csv_path.stat().st_ino == inode


def test_rows_after_the_resumed_checkpoint_are_dropped_by_readers(run_dir: Path,
                                                                  faces_dir: Path):
    from facediff.viz.training import read_metrics

    shutil.rmtree(ck.latest_checkpoint(run_dir))  # as if it crashed after logging step 4
    assert main(_train_args(run_dir, faces_dir, 6)) == 0  # resumes at 2, logs 4 again
    steps = [int(r["step"]) for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv"))]
    assert steps.count(4) == 2
    assert list(read_metrics(run_dir)["step"]) == sorted(set(steps))


# ---- interrupted writes ------------------------------------------------------------------

def test_leftovers_of_interrupted_writes_are_cleaned_at_start(run_dir: Path,
                                                              faces_dir: Path):
    (run_dir / ".model.old-999").mkdir()  # a kill during an export's replacement
    (run_dir / ".tmp-model-999").mkdir()
    (run_dir / "checkpoints" / ".tmp-step-0000006-999").mkdir()
    (run_dir / ".config.yaml.999.tmp").write_text("half")
    assert main(_train_args(run_dir, faces_dir, 6)) == 0
    assert sorted(p.name for p in run_dir.glob(".*")) == [".lock"]
    assert not list((run_dir / "checkpoints").glob(".*"))


def test_an_export_whose_replacement_never_arrived_is_restored(run_dir: Path):
    os.replace(run_dir / "model", run_dir / ".model.old-999")
    with RunLock(run_dir):
        ck.clean_stale(run_dir)
    assert ck.is_exported_model(run_dir / "model")


# ---- bad numbers and bad paths -----------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--guidance", "nan"], ["guidance", "nan"]),
    (["--eta", "nan"], ["eta", "nan"]),
    (["--eta", "2"], ["eta", "between 0 and 1"]),
    (["--guidance-rescale", "5"], ["guidance rescale", "between 0 and 1"]),
    (["--guidance", "inf"], ["guidance", "inf"]),
])
def test_bad_sampling_numbers_are_one_line(run_dir: Path, tmp_path: Path, capsys,
                                           args: list[str], words: list[str]):
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "s"), *args]) == 2
    _one_line(capsys, *words)


@pytest.mark.parametrize("override", ["train.lr=.nan", "train.lr=.inf", "train.lr=-1",
                                      "train.adam_betas=[0.9, .nan]", "sample.eta=2",
                                      "sample.guidance_rescale=5", "diffusion.snr_gamma=0",
                                      "train.max_nonfinite_steps=0"])
def test_bad_config_numbers_are_one_line(faces_dir: Path, tmp_path: Path, capsys,
                                         override: str):
    assert main(["train", "--out", str(tmp_path / "r"), *tiny_args(faces_dir),
                 "--set", override]) == 2
    _one_line(capsys, override.split("=")[0])
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_output_paths_are_checked_before_any_work(run_dir: Path, tmp_path: Path, capsys,
                                                  monkeypatch):
    import facediff.api

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(facediff.api, "load", no_model)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["sample", str(run_dir), "--out", str(a_file)], "is a file"),
        (["sample", str(run_dir), "--out", str(a_file / "sub")], "a_file"),
        (["interpolate", str(run_dir), "--out", str(tmp_path)], "is a folder"),
        (["edit", str(a_file), "--attr", "Smiling=1", "--out", str(tmp_path)], "is a folder"),
        (["edit", str(a_file), "--attr", "Smiling=1", "--strength", "nan"], "--strength"),
        (["viz", "reverse", str(run_dir), "--out", str(tmp_path)], "is a folder"),
        (["train", "--out", str(a_file), *tiny_args(run_dir)], "is a file"),
        (["eval", str(run_dir), "--out", str(a_file)], "is a file"),
    ]
    for argv, word in cases:
        assert main(argv) == 2, argv
        _one_line(capsys, word)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(run_dir: Path, tmp_path: Path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["sample", str(run_dir), "--out", str(ro)]) == 2
        _one_line(capsys, "cannot write", "Permission denied")
    finally:
        ro.chmod(0o755)


def test_a_signal_during_training_still_checkpoints_with_the_lock(faces_dir: Path,
                                                                   tmp_path: Path):
    """The lock is released when a trainer is stopped, so the same command resumes."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "facediff", *_train_args(out, faces_dir, 10**5)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 90
    while time.time() < deadline and ck.latest_checkpoint(out) is None:
        time.sleep(0.2)
    p.terminate()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert main(_train_args(out, faces_dir, ck.list_checkpoints(out)[-1][0] + 2)) == 0


def test_a_folder_that_refuses_writes_is_one_line(run_dir: Path, tmp_path: Path, capsys,
                                                  monkeypatch):
    """The same path as a read-only folder, for any user (root writes into read-only ones)."""
    from facediff.commands import arguments

    def refused(*_a, **_k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(arguments.tempfile, "TemporaryFile", refused)
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "s")]) == 2
    _one_line(capsys, "cannot write to --out", "Permission denied")
