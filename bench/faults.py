"""The slow faults, on a real trainer process: repeated ``kill -9`` at random moments
(some while a checkpoint is being written), a full filesystem (a small tmpfs, root only),
two trainers on one run dir, and a divergence. Prints a table of what happened.

    python bench/faults.py --kills 20 --work ~/runs/faults

Each case says what it checked; a case that does not hold raises (exit 1). The fast versions
of these cases are tests (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facediff.train import checkpoint as ck  # noqa: E402

# a ~60k-parameter U-Net on 16 px images (as the tests use): checkpoints of about 1 MB
TINY = ["data.image_size=16", "model.block_out_channels=[16,32]", "model.layers_per_block=1",
        "model.attention_levels=[1]", "model.attention_head_dim=16", "model.norm_num_groups=8",
        "train.batch_size=8", "train.lr=0.002", "train.warmup_steps=2", "train.log_every=2",
        "train.sample_every=1000", "train.sample_n=4", "sample.steps=4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def facediff(*args: str) -> list[str]:
    return [sys.executable, "-m", "facediff", *args]


def train_cmd(run: Path, data: Path, steps: int, *extra: str) -> list[str]:
    sets = [a for o in [*TINY, *extra] for a in ("--set", o)]
    return facediff("train", "--data", str(data), "--preset", "tiny", "--out", str(run),
                    "--max-steps", str(steps), "--no-progress", "-q", *sets)


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=ROOT)


def error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("facediff: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def kills(work: Path, data: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """kill -9 a trainer n times, some while a checkpoint is being written; after each, the
    newest checkpoint must load and the next start must resume from it."""
    rng = random.Random(seed)
    out = work / "kills"
    shutil.rmtree(out, ignore_errors=True)
    in_write = left = 0
    for i in range(n):
        p = subprocess.Popen(train_cmd(out, data, 10**6, "train.checkpoint_every=3"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
                             cwd=ROOT)
        target_write = i % 2 == 1  # every other kill: wait for a checkpoint being written
        deadline = time.time() + (rng.uniform(2.0, 6.0) if not target_write else 30)
        caught = False
        while time.time() < deadline:
            if target_write and list((out / "checkpoints").glob(".tmp-*")):
                caught = True
                break
            time.sleep(0.001 if target_write else 0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        in_write += caught
        left += bool(list((out / "checkpoints").glob(".tmp-*")))
        found = ck.load_latest_checkpoint(out)  # raises if nothing loads
        newest = ck.list_checkpoints(out)
        # the newest complete checkpoint always loads: none was ever half-written
        assert (found is None and not newest) or found[0] == newest[-1][1], (found, newest)
    final = ck.list_checkpoints(out)[-1][0] + 3
    r = run(train_cmd(out, data, final, "train.checkpoint_every=3"))
    assert r.returncode == 0, r.stderr
    assert ck.latest_checkpoint(out).name == ck.checkpoint_name(final)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    ck.read_model(out)
    return [(f"kill -9 x{n} ({in_write} during a checkpoint write)",
             f"every time the newest complete checkpoint loaded and the next start resumed "
             f"from it; {left} left a temporary folder, removed at the next start; finished "
             f"at step {final}")]


def full_disk(work: Path, data: Path) -> list[tuple[str, str]]:
    """An 8 MB tmpfs fills up at a checkpoint: one line, nothing left half-written; once there
    is room the same command resumes."""
    mnt = work / "tmpfs"
    mnt.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        return [("full disk (tmpfs)", "not run: needs root and mount")]
    try:
        out = mnt / "run"
        cmd = train_cmd(out, data, 200, "train.checkpoint_every=2", "train.keep_checkpoints=5")
        r = run(cmd)
        assert r.returncode == 2, (r.returncode, r.stderr)
        line = error_line(r)
        assert "No space left on device" in line, line
        left = [p for p in out.rglob(".tmp-*")]
        assert not left, left
        last = ck.list_checkpoints(out)[-1][0]
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        r2 = run(cmd)
        assert r2.returncode == 0, r2.stderr
        return [("full disk (8 MB tmpfs)", f"exit 2: {line.split('error: ')[1][:90]}...; "
                                           f"no temporary folder left"),
                ("... then room again", f"the same command resumed from step {last} and "
                                        "finished (exit 0)")]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def two_trainers(work: Path, data: Path) -> list[tuple[str, str]]:
    out = work / "two"
    shutil.rmtree(out, ignore_errors=True)
    first = subprocess.Popen(train_cmd(out, data, 10**6, "train.checkpoint_every=3"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
                             cwd=ROOT)
    deadline = time.time() + 120
    while ck.latest_checkpoint(out) is None:
        assert time.time() < deadline and first.poll() is None, "the first trainer never saved"
        time.sleep(0.1)
    r = run(train_cmd(out, data, 10**6, "train.checkpoint_every=3"))
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    rows = (out / "logs" / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows]
    assert r.returncode == 2 and steps == sorted(set(steps)), (r.stderr, steps)
    return [("two trainers on one run dir", f"the second exits 2: "
                                            f"{error_line(r).split('error: ')[1][:70]}...; "
                                            "metrics.csv has each step once")]


def divergence(work: Path, data: Path) -> list[tuple[str, str]]:
    out = work / "diverge"
    shutil.rmtree(out, ignore_errors=True)
    assert run(train_cmd(out, data, 6, "train.checkpoint_every=3")).returncode == 0
    r = run(train_cmd(out, data, 200, "train.checkpoint_every=3", "train.lr=1000"))
    assert r.returncode == 2, r.stderr
    line = error_line(r)
    for _, c in ck.list_checkpoints(out):
        assert not ck.non_finite(ck.load_file(str(c / "ema.safetensors")))
    s = run(facediff("sample", str(out), "--n", "2", "--steps", "2", "--no-progress",
                     "--out", str(work / "diverge-samples")))
    assert s.returncode == 0, s.stderr
    return [("resume with train.lr=1000", f"exit 2: {line.split('error: ')[1][:80]}...; "
                                          "every checkpoint finite; sample works")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(Path.home() / "runs" / "faults"))
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    data = work / "faces"
    if not data.is_dir():
        assert run(facediff("data", "synth", "--out", str(data), "--n", "64", "--size", "24",
                            "-q")).returncode == 0
    rows: list[tuple[str, str, float]] = []
    for case in (kills, full_disk, two_trainers, divergence):
        t0 = time.perf_counter()
        found = case(work, data, args.kills, args.seed) if case is kills else case(work, data)
        rows += [(c, o, time.perf_counter() - t0) for c, o in found]
    print("| case | outcome | seconds |")
    print("|---|---|---|")
    for c, o, s in rows:
        print(f"| {c} | {o} | {s:.0f} |")


if __name__ == "__main__":
    main()
