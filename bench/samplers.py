"""Seconds and peak memory to sample N images with each sampler at each step count.

Run by hand, not in CI:
    python bench/samplers.py MODEL [--n 64] [--steps 10 20 50 1000] [--batch-size 64]

MODEL is a run dir or exported model dir. Each (sampler, steps) pair runs in a fresh process,
so its peak memory is its own: the peak resident set size (RSS) of that process on CPU, the
peak allocated CUDA memory on a GPU. Memory that stays flat from 10 to 1000 steps shows that
nothing is kept per step. Seconds exclude loading the model and one 2-step warm-up run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

import facediff
from facediff.diffusion.sampling import SAMPLERS


def one(args: argparse.Namespace, name: str, steps: int) -> dict:
    model = facediff.load(args.model, device=args.device)
    model.sample_tensor(2, steps=2, sampler=name)  # warm-up
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    evals: list[int] = []
    t0 = time.perf_counter()
    model.sample_tensor(args.n, steps=steps, sampler=name, batch_size=args.batch_size,
                        callback=lambda i, n, t, x, x0: evals.append(1))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak,
            "evals": len(evals) // -(-args.n // args.batch_size),
            "device": str(model.device), "size": model.config.data.image_size,
            "source": str(model.source)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 1000])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    ap.add_argument("--device", default=None)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: "sampler:steps", prints JSON
    args = ap.parse_args()
    if args.one:
        name, steps = args.one.split(":")
        print("RESULT " + json.dumps(one(args, name, int(steps))), flush=True)
        return
    rows = []
    for steps in args.steps:
        for name in args.samplers:
            out = subprocess.run([sys.executable, *sys.argv, "--one", f"{name}:{steps}"],
                                 capture_output=True, text=True)
            lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not lines:
                sys.exit(f"{name} {steps} failed:\n{out.stderr[-3000:]}")
            r = json.loads(lines[-1][7:])
            rows.append((name, steps, r))
            print(f"# {name} {steps}: {r['seconds']:.2f} s, peak {r['peak_mb']:.0f} MB",
                  flush=True)
    r0 = rows[0][2]
    mem = "peak CUDA memory (MB)" if r0["device"].startswith("cuda") else "peak RSS (MB)"
    print(f"\nmodel {r0['source']}, {r0['size']} px, {args.n} images in batches of "
          f"{args.batch_size}, device {r0['device']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print(f"| sampler | steps | network evaluations | seconds per {args.n} images | {mem} |")
    print("|---|---|---|---|---|")
    for name, steps, r in rows:
        print(f"| {name} | {steps} | {r['evals']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
