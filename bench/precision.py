"""Inference precision on this machine: seconds per 1,000 faces and how far the faces move.

For each model and each variant (fp32; bf16 autocast, facediff's ``--precision bf16``; bf16
weights, the whole network cast; each with and without channels_last): the seconds to
sample ``--n`` faces (after a warm-up batch), scaled to 1,000, and the mean and largest
absolute difference (0-255 levels) of the faces from the fp32 faces of the same seeds.

    python bench/precision.py celebahq-32 ~/runs/pixel64 ~/runs/latent64 --n 250
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import facediff as fd


def variants(names: str) -> list[tuple[str, str, bool, bool]]:
    """(name, precision, bf16 weights, channels_last)."""
    table = {
        "fp32": ("fp32", False, False),
        "fp32-cl": ("fp32", False, True),
        "bf16": ("bf16", False, False),
        "bf16-cl": ("bf16", False, True),
        "bf16-weights": ("fp32", True, False),
        "bf16-weights-cl": ("fp32", True, True),
    }
    return [(n, *table[n]) for n in names.split(",")]


def run(model_dir: str, n: int, batch: int, steps: int, names: str) -> dict:
    out: dict = {}
    ref = None
    for name, precision, cast, cl in variants(names):
        model = fd.load(model_dir, device="cpu", precision=precision)
        if cast:
            model.net.to(torch.bfloat16)
        if cl:
            model.net.to(memory_format=torch.channels_last)
        model.sample_tensor(min(batch, 16), steps=steps, batch_size=min(batch, 16),
                            seed=10**6)  # warm-up
        t = time.perf_counter()
        imgs = model.sample_tensor(n, steps=steps, batch_size=batch, seed=0).numpy()
        sec = (time.perf_counter() - t) * 1000 / n
        row = {"seconds_per_1000": round(sec, 1)}
        if ref is None:
            ref = imgs.astype(np.int16)
        else:
            d = np.abs(imgs.astype(np.int16) - ref)
            row.update(mean_abs_diff=round(float(d.mean()), 2), max_abs_diff=int(d.max()))
        print(f"{model_dir} {name}: {row}", flush=True)
        out[name] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--n", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--variants", default="fp32,bf16,bf16-cl,bf16-weights,fp32-cl")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    results = {m: run(m, args.n, args.batch_size, args.steps, args.variants)
               for m in args.models}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
