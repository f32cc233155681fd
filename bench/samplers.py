"""Seconds to sample N images with each sampler at a given step count (and peak RSS growth).

Run by hand, not in CI:
    python bench/samplers.py MODEL [--n 16] [--steps 25] [--batch-size 16]
MODEL is a run dir or exported model dir (for a quick check, a run of the tiny preset).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import facediff
from facediff.diffusion.sampling import SAMPLERS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, nargs="+", default=[25])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    model = facediff.load(args.model, device=args.device)
    model.sample_tensor(2, steps=2)  # warm-up
    print(f"model {model.source}, {model.config.data.image_size}px, device {model.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| sampler | steps | model evaluations | seconds | max RSS (MB) |")
    print("|---|---|---|---|---|")
    for steps in args.steps:
        for name in args.samplers:
            evals = []
            t0 = time.perf_counter()
            model.sample_tensor(args.n, steps=steps, sampler=name, batch_size=args.batch_size,
                                callback=lambda i, n, t, x, x0, e=evals: e.append(1))
            dt = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            per_batch = len(evals) // -(-args.n // args.batch_size)
            print(f"| {name} | {steps} | {per_batch} | {dt:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
