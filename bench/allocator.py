"""The training step with and without facediff.allocator's glibc settings (run by hand).

    python bench/allocator.py --preset pixel64 --threads 2 --steps 6 --repeats 2

Each variant runs in a fresh process (the allocator's settings are for the whole process):
``default`` is glibc as it comes, ``tuned`` calls facediff.allocator.tune_allocator() first.
A bare loop of the preset's network (forward, backward, AdamW) on one random batch; prints
img/s after 2 warm-up steps, and the page faults per second during the timed steps.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time


def child(preset: str, steps: int, batch: int, tuned: bool) -> None:
    if tuned:
        from facediff.allocator import tune_allocator

        assert tune_allocator(), "the allocator settings did not apply here"
    import torch

    from facediff.config import sample_shape
    from facediff.configure import resolve_config
    from facediff.model import build_net

    torch.manual_seed(0)
    cfg = resolve_config(preset=preset)
    net = build_net(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(batch, *sample_shape(cfg))
    t = torch.randint(0, 1000, (batch,))

    def step() -> None:
        (net(x, t).sample - x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(f"{batch * steps / dt:.2f} {faults / dt:.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="pixel64")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.preset, args.steps, args.batch, args.child == "tuned")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"{args.preset}, batch {args.batch}, {args.threads} thread(s), {args.steps} steps")
    print("| variant | img/s | page faults/s |\n|---|---|---|")
    for _ in range(args.repeats):
        for variant in ("default", "tuned"):
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--preset",
                                  args.preset, "--steps", str(args.steps), "--batch",
                                  str(args.batch)], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            print(f"| {variant} | {out[0]} | {out[1]} |", flush=True)


if __name__ == "__main__":
    main()
