"""What a training step could be made of: a bare loop (no data path, EMA, clipping or
accelerate) around the 32-64-128 UNet2DModel of bench/peers.py, in variants (run by hand).

    OMP_NUM_THREADS=2 python bench/step_variants.py --batch 32 autocast math pure-math fp32

Variants (combine the words with "-"):
  autocast  bf16 autocast, weights fp32, PyTorch SDPA attention (facediff's step before
            the attention change)
  math      the plain matmul-softmax attention (diffusers' AttnProcessor): train.attention=math
  pure      weights, activations and the optimizer in bf16, no fp32 master weights: an upper
            bound for a bf16-weights trainer (not a recipe: bf16 Adam updates lose precision)
  cl        channels-last memory format
  fp32      no autocast
Prints img/s over --steps steps after 3 warm-up steps, each variant in this process in turn.
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor


def network() -> UNet2DModel:
    return UNet2DModel(sample_size=32, block_out_channels=(32, 64, 128), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                       norm_num_groups=8, resnet_time_scale_shift="scale_shift",
                       attention_head_dim=32)


def img_per_s(variant: str, batch: int, steps: int) -> float:
    words = set(variant.split("-"))
    torch.manual_seed(0)
    net = network()
    if "math" in words:
        for m in net.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor())
    pure = "pure" in words
    if pure:
        net = net.to(torch.bfloat16)
    if "cl" in words:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(batch, 3, 32, 32)
    t = torch.randint(0, 1000, (batch,))
    autocast = not pure and "fp32" not in words

    def step() -> None:
        xi = x.bfloat16() if pure else x
        if "cl" in words:
            xi = xi.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            out = net(xi, t).sample
        (out.float() - x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for v in args.variants:
        print(f"| {v} | {img_per_s(v, args.batch, args.steps):.1f} img/s |", flush=True)


if __name__ == "__main__":
    main()
