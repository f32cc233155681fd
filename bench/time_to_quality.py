"""Time to quality: FID after the same wall time of training, facediff against lucidrains.

Run by hand (not in CI), in the peer venv of bench/peers.py (lucidrains' package needs
torchvision), one run after the other, never two at once:

    ~/venvs/peer/bin/python bench/time_to_quality.py --data ../shared/datasets/celebahq-64 \
        --size 32 --minutes 30 --runs ~/runs/ttq --tools facediff,lucidrains --n 1000

Each entry trains for --minutes of wall-clock time (from the first step; start-up is not
counted, periodic sample grids and checkpoints are), samples --n images with the tool's
fast sampler and scores them with ``facediff eval --images`` against --ref-n images of the
data at --size px. Results are appended to RUNS/results.jsonl and the table of every entry
there is printed, so recipe ablations can be added one by one:

    ... --tools facediff --minutes 5 --label eps --set diffusion.prediction=eps

* facediff: ``facediff train --preset tiny`` with 32-64-128 channels (2.66 M parameters, as in
  bench/peers.py), its default recipe unless --set says otherwise, and ``--time-limit``;
  max_steps (the end of the cosine learning-rate decay) is --img-per-s x seconds / batch,
  from bench/peers.py's measured speed. Sampled with its default sampler (DPM-Solver++, 25).
* lucidrains: ``denoising_diffusion_pytorch.Trainer`` at its defaults (batch 16, lr 1e-4,
  fp32, EMA 0.995 every 10 steps, pred_v, sigmoid schedule) around ``Unet(dim=32,
  dim_mults=(1, 2, 4))`` (2.61 M parameters); its built-in FID is off (it downloads weights).
  Sampled with its fast sampler, DDIM, at --lucidrains-steps (its README uses 250).

A finished stage is not repeated: training leaves RUN/trained.json, sampling a full folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BATCH = 32
NET = ["model.block_out_channels=[32,64,128]"]


def train_facediff(args: argparse.Namespace, run: Path) -> dict:
    steps = round(args.img_per_s * args.minutes * 60 / BATCH)
    cmd = [sys.executable, "-m", "facediff", "train", "--data", str(args.data), "--out",
           str(run), "--preset", "tiny", "--time-limit", str(args.minutes), "--no-progress",
           "--max-steps", str(steps), "--set", f"data.image_size={args.size}",
           "--set", f"train.batch_size={BATCH}", *[x for s in NET + args.overrides
                                                    for x in ("--set", s)]]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    import csv

    with open(run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    # the first row is logged after log_every steps: extrapolate back to step 0
    span = float(last["time"]) - float(first["time"])
    seconds = span * int(last["step"]) / max(1, int(last["step"]) - int(first["step"]))
    from facediff.train.checkpoint import latest_checkpoint

    final = int(Path(latest_checkpoint(run)).name.split("-")[1])  # type: ignore[arg-type]
    return {"steps": final, "images_seen": final * BATCH, "train_seconds": seconds,
            "max_steps": steps,
            "overrides": args.overrides}


class _TimeUp(Exception):
    pass


def train_lucidrains(args: argparse.Namespace, run: Path) -> dict:
    import torch
    from denoising_diffusion_pytorch import GaussianDiffusion, Trainer, Unet

    unet = Unet(dim=32, dim_mults=(1, 2, 4), flash_attn=False)
    diffusion = GaussianDiffusion(unet, image_size=args.size, timesteps=1000,
                                  sampling_timesteps=args.lucidrains_steps)
    trainer = Trainer(diffusion, str(args.data), results_folder=str(run),
                      calculate_fid=False)
    state = {"steps": 0, "t0": None}
    opt_step = trainer.opt.step

    def timed_step(*a: object, **k: object) -> object:
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        out = opt_step(*a, **k)
        state["steps"] += 1
        if time.perf_counter() - state["t0"] >= args.minutes * 60:
            raise _TimeUp
        return out

    trainer.opt.step = timed_step
    try:
        trainer.train()
    except _TimeUp:
        pass
    seconds = time.perf_counter() - state["t0"]
    trainer.step = state["steps"]
    trainer.save("final")
    torch.save(trainer.ema.ema_model.state_dict(), run / "ema.pt")
    return {"steps": state["steps"], "images_seen": state["steps"] * trainer.batch_size,
            "train_seconds": seconds, "params": sum(p.numel() for p in unet.parameters())}


def sample_facediff(args: argparse.Namespace, run: Path, out: Path) -> str:
    subprocess.run([sys.executable, "-m", "facediff", "sample", str(run), "--n", str(args.n),
                    "--out", str(out), "--no-grid", "--no-progress", "--batch-size", "100",
                    "--seed", "0"], check=True)
    import facediff

    s = facediff.load(run, device="cpu").config.sample
    return f"{s.sampler} {s.steps}"


def sample_lucidrains(args: argparse.Namespace, run: Path, out: Path) -> str:
    import numpy as np
    import torch
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from PIL import Image

    unet = Unet(dim=32, dim_mults=(1, 2, 4), flash_attn=False)
    diffusion = GaussianDiffusion(unet, image_size=args.size, timesteps=1000,
                                  sampling_timesteps=args.lucidrains_steps)
    diffusion.load_state_dict(torch.load(run / "ema.pt", map_location="cpu"))
    diffusion.eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    done = 0
    while done < args.n:
        b = min(100, args.n - done)
        with torch.inference_mode():
            x = diffusion.sample(batch_size=b)  # in [0, 1]
        arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, a in enumerate(arr):
            Image.fromarray(np.ascontiguousarray(a)).save(out / f"{done + i:05d}.png")
        done += b
        print(f"lucidrains samples: {done}/{args.n}", flush=True)
    return f"ddim {args.lucidrains_steps}"


def score(args: argparse.Namespace, images: Path, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "facediff", "eval", "--images", str(images),
                    "--ref", str(args.data), "--size", str(args.size), "--ref-n",
                    str(args.ref_n), "--out", str(out), "--no-progress"], check=True)
    return json.loads((out / "results.json").read_text())[0]


def table(path: Path) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = list({r["label"]: r for r in rows}.values())  # a label scored again: its last row
    print("| entry | change | minutes | steps | images seen | sampler | n | FID | KID x1e3 | "
          "precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["scores"]
        kid = s.get("kid")
        change = " ".join(r.get("overrides") or []) or "-"
        print(f"| {r['label']} | {change} | {r['train_seconds'] / 60:.1f} | {r['steps']} | "
              f"{r['images_seen']} | {r['sampler']} | {r['n']} | {s['fid']:.2f} | "
              f"{'' if kid is None else f'{kid * 1e3:.2f}'} | {s.get('precision', 0):.3f} | "
              f"{s.get('recall', 0):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--tools", default="facediff,lucidrains")
    ap.add_argument("--label", help="entry name (default: the tool's name)")
    ap.add_argument("--n", type=int, default=1000, help="images to sample and score")
    ap.add_argument("--ref-n", type=int, default=5000)
    ap.add_argument("--img-per-s", type=float, default=90.0,
                    help="facediff's measured training speed, to set max_steps")
    ap.add_argument("--lucidrains-steps", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--table", action="store_true", help="only print the table")
    args = ap.parse_args()
    args.data = args.data.expanduser().resolve()
    args.runs = args.runs.expanduser()
    args.runs.mkdir(parents=True, exist_ok=True)
    results = args.runs / "results.jsonl"
    if args.table:
        table(results)
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    for tool in args.tools.split(","):
        label = args.label or tool
        run = args.runs / label
        done = run / "trained.json"
        if not done.is_file():
            info = (train_facediff if tool == "facediff" else train_lucidrains)(args, run)
            done.write_text(json.dumps(info))
        info = json.loads(done.read_text())
        samples = run / "generated"  # (RUN/samples holds facediff's training grids)
        if len(list(samples.glob("*.png"))) < args.n:
            sampler = (sample_facediff if tool == "facediff" else sample_lucidrains)(
                args, run, samples)
        else:
            sampler = info.get("sampler", "?")
        info["sampler"] = sampler
        done.write_text(json.dumps(info))
        scores = score(args, samples, run / "eval")
        row = {"label": label, "tool": tool, "n": args.n, "size": args.size,
               "scores": scores, **info}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
    table(results)


if __name__ == "__main__":
    main()
