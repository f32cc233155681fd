"""Where a training step's time goes: torch.profiler over facediff's real train_step.

Run by hand, not in CI (synthetic faces unless --data):

    python bench/profile_step.py --size 32 --batch 32 --steps 8
    python bench/profile_step.py --set train.mixed_precision=no

The network is the one bench/peers.py times (the `tiny` preset widened to 32-64-128, 2.66 M
parameters). Prints the model's forward GFLOP per image (torch's FLOP counter), the
measured img/s and model GFLOP/s (3x forward: forward + backward), and the step's CPU time
by category (self time of the aten ops, grouped by name): convolutions, normalisation,
activations, attention, elementwise arithmetic, the optimizer with the EMA (both
multi-tensor `_foreach` ops), copies and the rest.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from facediff.configure import resolve_config
from facediff.data.synthetic import make_faces
from facediff.train.trainer import Trainer

# first match wins: (category, substrings of the aten op's name)
CATEGORIES = [
    ("convolution", ("conv", "mkldnn_convolution")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm")),
    ("activation", ("silu", "gelu", "sigmoid")),
    ("attention", ("attention", "softmax", "bmm", "baddbmm")),
    ("linear / matmul", ("addmm", "mm", "linear", "matmul")),
    ("optimizer + EMA", ("_foreach", "adam", "sqrt", "addcdiv", "lerp")),
    ("copies / casts", ("copy_", "to_copy", "contiguous", "clone", "cat", "stack",
                        "index", "empty", "zero", "fill")),
    ("elementwise", ("add", "mul", "sub", "div", "pow", "neg", "exp", "mean", "sum")),
]


def category(name: str) -> str:
    n = name.lower()
    return next((c for c, keys in CATEGORIES if any(k in n for k in keys)), "other")


def forward_gflop(tr: Trainer, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net = tr.net
    x = torch.randn(1, net.config.in_channels, size, size)
    t = torch.tensor([500])
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x, t)
    return fc.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="profiled steps (after 5 warm-up)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--trace", help="also write a Chrome trace here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "faces"
            make_faces(data, 512, size=args.size)
        cfg = resolve_config(preset="tiny", overrides=[
            f"data.path={data}", f"data.image_size={args.size}",
            f"train.batch_size={args.batch}", "model.block_out_channels=[32,64,128]",
            *args.overrides])
        tr = Trainer(cfg, Path(tmp) / "run", progress=False)
        tr.train_net.train()
        gflop = forward_gflop(tr, args.size)
        for _ in range(5):
            tr.train_step()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                with record_function("train_step"):
                    loss, _ = tr.train_step()
            float(loss)
        seconds = time.perf_counter() - t0
    img_s = args.steps * args.batch / seconds
    by_cat: dict[str, float] = defaultdict(float)
    total = 0.0
    for ev in prof.key_averages():
        if ev.key == "train_step" or not ev.key.startswith("aten::"):
            continue
        by_cat[category(ev.key)] += ev.self_cpu_time_total
        total += ev.self_cpu_time_total
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision {tr.accelerator.mixed_precision}, {args.size} px, batch {args.batch}")
    print(f"forward {gflop:.3f} GFLOP/image; {img_s:.1f} img/s under the profiler; "
          f"model {3 * gflop * img_s:.0f} GFLOP/s")
    print("| category | share of aten self CPU time |\n|---|---|")
    for cat, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"| {cat} | {100 * us / total:.1f}% |")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
