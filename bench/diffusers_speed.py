"""The same exported model sampled by diffusers' own pipeline and by facediff (issue 23): seconds
per 1,000 faces and the largest pixel difference, same sampler, steps and seeds.

    python bench/diffusers_speed.py exports/celebahq-64 --n 256 --batch-size 64

The model is exported with ``facediff export --format diffusers`` into a temporary folder and
loaded back with ``DiffusionPipeline.from_pretrained`` (its own ``DDPMPipeline``, or the
folder's ``FacediffPipeline`` for conditional and latent models). Each runner samples faces
0..n-1 (image i from seed i) in batches of --batch-size after one warm-up batch; diffusers
runs in float32 (its pipeline has no autocast), facediff in float32 and in its default
precision here (``auto``: bf16 autocast where the CPU computes bf16 natively). Prints a table
and writes it as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import facediff as fd
from facediff.hub import export_pipeline


def diffusers_faces(folder: Path, n: int, batch: int, steps: int) -> np.ndarray:
    """uint8 NHWC faces 0..n-1 from diffusers' pipeline, one generator per face (seed i)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for start in range(0, n, batch):
        gens = [torch.Generator().manual_seed(i) for i in range(start, min(n, start + batch))]
        images = pipe(batch_size=len(gens), generator=gens, num_inference_steps=steps,
                      output_type="np").images
        out.append((images * 255).round().astype(np.uint8))
    return np.concatenate(out)


def timed(fn, *args) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a model dir, run dir or bundled name")
    p.add_argument("--n", type=int, default=256, help="faces per runner (default 256)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", help="write the table as JSON here")
    args = p.parse_args()
    model = fd.load(args.model, device="cpu", precision="fp32")
    s = model.settings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_pipeline(model, Path(tmp) / "pipe")
        diffusers_faces(folder, min(8, args.n), args.batch_size, s.steps)  # warm-up
        theirs, sec = timed(diffusers_faces, folder, args.n, args.batch_size, s.steps)
        rows.append({"runner": "diffusers pipeline", "precision": "fp32", "seconds": sec})
    for precision in ("fp32", "auto"):
        m = fd.load(args.model, device="cpu", precision=precision)
        m.sample_tensor(min(8, args.n), batch_size=args.batch_size)  # warm-up
        t = time.perf_counter()
        ours = m.sample_tensor(args.n, batch_size=args.batch_size, seed=0).numpy()
        sec = time.perf_counter() - t
        diff = int(np.abs(ours.astype(int) - theirs.astype(int)).max())
        mean = float(np.abs(ours.astype(int) - theirs.astype(int)).mean())
        rows.append({"runner": "facediff", "precision": m.dtype, "seconds": sec,
                     "max_diff_vs_diffusers": diff, "mean_diff_vs_diffusers": mean})
    print(f"{model.source}: {args.n} faces, {s.sampler} {s.steps} steps, batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads")
    print("| runner | precision | seconds | s / 1,000 faces | largest pixel difference "
          "(0-255) vs diffusers | mean |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["n"], r["per_1000"] = args.n, r["seconds"] * 1000 / args.n
        diff = r.get("max_diff_vs_diffusers", "-")
        mean = f"{r['mean_diff_vs_diffusers']:.4f}" if "mean_diff_vs_diffusers" in r else "-"
        print(f"| {r['runner']} | {r['precision']} | {r['seconds']:.1f} | "
              f"{r['per_1000']:.0f} | {diff} | {mean} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
