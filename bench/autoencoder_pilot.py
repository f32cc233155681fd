"""Which first-stage autoencoder pays on this CPU? A time-boxed pilot (issue: latent diffusion).

Trains each candidate for the same wall-clock budget on the training part of celebahq-128 at
64 px (bf16 autocast where the CPU has it), then measures on held-out faces: PSNR, SSIM, and the
speed of training, encoding and decoding. Candidates: diffusers' AutoencoderKL at the pilot's
width (32-64-128, f=4), a narrower one (16-32-64), the pilot's one trained on random 32 px crops
(the network is fully convolutional, so a crop costs a quarter), and AutoencoderTiny at f=4.

    pip install pytorch-msssim   # SSIM (no download at run time)
    python bench/autoencoder_pilot.py --data ../shared/datasets/celebahq-128 --minutes 4

Held-out split: the first 2,000 of a permutation of the images seeded with 2026 (the split
every latent-diffusion number of this project uses); the PSNR/SSIM here are on 500 of them.
Loss: L1 + 0.2 (1 - SSIM) (+ KL 1e-6 for AutoencoderKL); no discriminator in the pilot.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ssim

from facediff.config import DataConfig
from facediff.data import load_data
from facediff.data.transforms import uint8_to_model
from facediff.model.autoencoder import FirstStage, build_autoencoder, reconstruction_loss
from facediff.train.trainer import resolve_mixed_precision

HELD_OUT_SEED, HELD_OUT = 2026, 2000

CANDIDATES = {  # name: (the network, the training crop)
    "kl-32-64-128": (lambda: build_autoencoder("kl", block_out_channels=(32, 64, 128),
                                               blocks_per_level=1), 64),
    "kl-16-32-64": (lambda: build_autoencoder("kl", block_out_channels=(16, 32, 64),
                                              blocks_per_level=1), 64),
    "kl-32-64-128-crop32": (lambda: build_autoencoder("kl", block_out_channels=(32, 64, 128),
                                                      blocks_per_level=1), 32),
    "tiny-f4": (lambda: build_autoencoder("tiny", block_out_channels=(48, 48, 48),
                                          blocks_per_level=2), 64),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """In dB, images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.clamp(-1, 1) - b) ** 2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(4 / mse.clamp(min=1e-10))).mean())


def score(net: FirstStage, held: np.ndarray, dtype: torch.dtype | None,
          ) -> tuple[float, float, float, float]:
    """(PSNR, SSIM, encode seconds, decode seconds) on ``held``."""
    ps, ss, enc_s, dec_s = [], [], 0.0, 0.0
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(held), 50):
            x = uint8_to_model(torch.from_numpy(held[start:start + 50]))
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                t = time.perf_counter()
                z, _ = net.encode(x)
                enc_s += time.perf_counter() - t
                t = time.perf_counter()
                y = net.decode(z).float()
                dec_s += time.perf_counter() - t
            y = y.float().clamp(-1, 1)  # scored in float32
            ps.append(psnr(y, x))
            ss.append(float(ssim((y + 1) / 2, (x + 1) / 2, data_range=1)))
    net.train()
    return float(np.mean(ps)), float(np.mean(ss)), enc_s, dec_s


def run(name: str, images: np.ndarray, held: np.ndarray, minutes: float, batch: int,
        precision: str, curve: list[float] | None = None) -> dict:
    make, crop = CANDIDATES[name]
    torch.manual_seed(0)
    net = make()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else None
    seen, t0, spent = 0, time.perf_counter(), 0.0
    marks = sorted(curve or [])
    points = []
    net.train()
    while spent < 60 * minutes:
        spent = time.perf_counter() - t0
        if marks and spent >= 60 * marks[0]:  # PSNR so far (scoring time not counted)
            t = time.perf_counter()
            points.append((marks.pop(0), seen, *score(net, held[:200], dtype)[:2]))
            print(f"  {name} at {points[-1][0]:g} min: {seen} images, PSNR "
                  f"{points[-1][2]:.2f} dB, SSIM {points[-1][3]:.3f}", flush=True)
            t0 += time.perf_counter() - t
        idx = torch.randint(0, len(images), (batch,), generator=g)
        x = uint8_to_model(torch.from_numpy(images[idx.numpy()]))
        if crop < x.shape[-1]:
            i, j = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=g))
            x = x[:, :, i:i + crop, j:j + crop]
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            z, kl_term = net.encode(x, sample=True, generator=g)
            y = net.decode(z).float()
        loss = reconstruction_loss(x, y, ssim_weight=0.2) + 1e-6 * kl_term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        seen += batch
    train_s = time.perf_counter() - t0
    p_, s_, enc_s, dec_s = score(net, held, dtype)
    with torch.inference_mode():
        z, _ = net.encode(uint8_to_model(torch.from_numpy(held[:1])))
    return {"name": name, "params_M": params / 1e6, "latent": tuple(z.shape[1:]),
            "train_img_s": seen / train_s, "images_seen": seen, "minutes": train_s / 60,
            "psnr": p_, "ssim": s_, "curve": points,
            "encode_img_s": len(held) / enc_s, "decode_img_s": len(held) / dec_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--minutes", type=float, default=4.0, help="training budget per candidate")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--held", type=int, default=500, help="held-out images scored")
    p.add_argument("--only", nargs="*", default=list(CANDIDATES))
    p.add_argument("--curve", type=float, nargs="*", metavar="MIN",
                   help="also score 200 held-out faces at these minutes of training")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_data(DataConfig(path=str(Path(args.data).resolve()), image_size=args.size,
                                hflip=False))
    order = np.random.default_rng(HELD_OUT_SEED).permutation(len(data))
    held_idx, train_idx = np.sort(order[:HELD_OUT]), np.sort(order[HELD_OUT:])
    images = np.asarray(data.images[train_idx])
    held = np.asarray(data.images[held_idx[:args.held]])
    precision = resolve_mixed_precision("auto")
    print(f"{len(images)} training and {len(held)} held-out images at {args.size} px; "
          f"{torch.get_num_threads()} threads, precision {precision}; "
          f"{args.minutes:g} min per candidate", flush=True)
    rows = []
    for name in args.only:
        r = run(name, images, held, args.minutes, args.batch, precision, args.curve)
        rows.append(r)
        print(r, flush=True)
    print("| candidate | params (M) | latent | train img/s | images seen | held-out PSNR (dB) "
          "| SSIM | encode img/s | decode img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params_M']:.2f} | {'x'.join(map(str, r['latent']))} | "
              f"{r['train_img_s']:.1f} | {r['images_seen']} | {r['psnr']:.2f} | "
              f"{r['ssim']:.3f} | {r['encode_img_s']:.0f} | {r['decode_img_s']:.0f} |")
    assert all(math.isfinite(r["psnr"]) for r in rows)


if __name__ == "__main__":
    main()
