"""Training throughput side by side: facediff, lucidrains' Trainer and a reference loop.

Run by hand (not in CI), in a venv that has all three (lucidrains' package needs
torchvision, whose PyPI build does not import beside the CPU torch facediff's venv uses):

    python -m venv ~/venvs/peer
    ~/venvs/peer/bin/pip install torch==2.14.1 torchvision==0.29.1 denoising-diffusion-pytorch
    ~/venvs/peer/bin/pip install -e '.[eval]'
    ~/venvs/peer/bin/python bench/peers.py --data ../shared/datasets/celebahq-64 --size 32

Same machine, data, resolution, batch and network size for every tool:
* facediff: its Trainer (the `tiny` preset widened to 32-64-128 channels, 2.66 M parameters),
  with its real data path (the decoded-image cache held on the device); also a "pre-made
  batch" step that skips the data path, to show what the data path costs.
* lucidrains: `denoising_diffusion_pytorch.Trainer` at its defaults (fp32, EMA every 10 steps,
  DataLoader with torchvision transforms, one worker per CPU) around `Unet(dim=32,
  dim_mults=(1, 2, 4))` (2.61 M parameters); FID and sampling are switched off so that only
  training is timed.
* reference: the loop of the scripts facediff replaces: a PyTorch DataLoader that decodes the
  JPEGs every step (PIL + torchvision transforms), fp32, diffusers' UNet2DModel (the same
  network as facediff's), DDPMScheduler, EMAModel(0.9999) and AdamW.

Each tool's img/s is the median of several timed windows after warm-up steps. Timestamps are
taken at each optimizer step, so data loading, forward, backward, clipping, the optimizer and
the EMA update all count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

FACEDIFF_NET = ["model.block_out_channels=[32,64,128]"]


def windows(stamps: list[float], warmup: int, steps: int, batch: int) -> list[float]:
    """img/s of consecutive windows of ``steps`` steps after ``warmup`` steps."""
    out = []
    i = warmup
    while i + steps < len(stamps):
        out.append(steps * batch / (stamps[i + steps] - stamps[i]))
        i += steps
    return out


# ---- facediff ---------------------------------------------------------------------------------

def facediff_trainer(args: argparse.Namespace, extra: list[str]) -> tuple[Callable, object]:
    from facediff.configure import resolve_config
    from facediff.train.trainer import Trainer

    cfg = resolve_config(preset="tiny", overrides=[
        f"data.path={args.data}", f"data.image_size={args.size}",
        f"train.batch_size={args.batch}", *FACEDIFF_NET, *extra])
    tmp = tempfile.mkdtemp(prefix="bench-facediff-")
    tr = Trainer(cfg, tmp, progress=False)
    tr.train_net.train()
    return tr.train_step, tr


def run_facediff(args: argparse.Namespace, extra: list[str]) -> dict:
    from facediff.model import count_parameters

    step, tr = facediff_trainer(args, extra)
    stamps = []
    n = args.warmup + args.steps * args.windows + 1
    for _ in range(n):
        loss, _ = step()
        float(loss)  # one sync per step for the timestamp (the trainer itself logs every N)
        stamps.append(time.perf_counter())
    return {"params": count_parameters(tr.net), "precision": tr.accelerator.mixed_precision,
            "speeds": windows(stamps, args.warmup, args.steps, args.batch),
            "data_ms": data_path_ms(tr)}


def data_path_ms(tr: object) -> float:
    """Milliseconds per step of the trainer's data path alone (what train_step does before
    the network: the seeded draws, the batch's indices, gathering and flipping the images)."""
    batch = slice(None)

    def data(step: int) -> torch.Tensor:
        return tr.images(tr.draw_batch(step), batch)  # type: ignore[attr-defined]

    for i in range(20):
        data(i)
    t0 = time.perf_counter()
    for i in range(200):
        data(i)
    return (time.perf_counter() - t0) / 200 * 1000


def run_facediff_premade(args: argparse.Namespace, extra: list[str]) -> dict:
    """The same optimizer step on one fixed, pre-made batch: no indexing, flips or draws."""
    from facediff.data.transforms import uint8_to_model

    _, tr = facediff_trainer(args, extra)
    b = args.batch
    x0 = uint8_to_model(tr.train_images[:b])
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (b,), device=x0.device)
    acc = tr.accelerator
    stamps = []
    for _ in range(args.warmup + args.steps * args.windows + 1):
        loss = tr.objective.loss(tr.train_net, x0, noise, t).mean()
        acc.backward(loss)
        acc.clip_grad_norm_(tr.train_net.parameters(), 1.0)
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        tr.lr_scheduler.step()
        tr.ema.step(tr.net.parameters())
        float(loss)
        stamps.append(time.perf_counter())
    return {"speeds": windows(stamps, args.warmup, args.steps, b)}


# ---- lucidrains -------------------------------------------------------------------------------

def run_lucidrains(args: argparse.Namespace) -> dict:
    from denoising_diffusion_pytorch import GaussianDiffusion, Trainer, Unet

    unet = Unet(dim=32, dim_mults=(1, 2, 4), flash_attn=False)
    diffusion = GaussianDiffusion(unet, image_size=args.size, timesteps=1000)
    n = args.warmup + args.steps * args.windows + 1
    trainer = Trainer(diffusion, str(args.data), train_batch_size=args.batch,
                      train_num_steps=n, save_and_sample_every=10**9, calculate_fid=False,
                      results_folder=tempfile.mkdtemp(prefix="bench-lucidrains-"))
    stamps: list[float] = []
    opt_step = trainer.opt.step

    def timed_step(*a: object, **k: object) -> object:
        out = opt_step(*a, **k)
        stamps.append(time.perf_counter())
        return out

    trainer.opt.step = timed_step
    trainer.train()
    return {"params": sum(p.numel() for p in unet.parameters()),
            "speeds": windows(stamps, args.warmup, args.steps, args.batch)}


# ---- reference loop ---------------------------------------------------------------------------

def run_reference(args: argparse.Namespace) -> dict:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from facediff.configure import resolve_config
    from facediff.model import build_net

    class Faces(Dataset):
        def __init__(self, root: Path, size: int) -> None:
            self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in
                                (".jpg", ".jpeg", ".png"))
            self.tf = transforms.Compose([
                transforms.Resize(size), transforms.CenterCrop(size),
                transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5])])

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.tf(Image.open(self.paths[i]).convert("RGB"))

    cfg = resolve_config(preset="tiny", overrides=[f"data.image_size={args.size}",
                                                   *FACEDIFF_NET])
    model = build_net(cfg).train()
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMAModel(model.parameters(), decay=0.9999)
    dl = DataLoader(Faces(Path(args.data), args.size), batch_size=args.batch, shuffle=True,
                    num_workers=args.workers, drop_last=True,
                    persistent_workers=args.workers > 0)
    stamps = []
    n = args.warmup + args.steps * args.windows + 1
    while len(stamps) < n:
        for x0 in dl:
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (x0.shape[0],))
            loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, noise, t), t).sample,
                                                noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.step(model.parameters())
            stamps.append(time.perf_counter())
            if len(stamps) >= n:
                break
    return {"params": sum(p.numel() for p in model.parameters()),
            "speeds": windows(stamps, args.warmup, args.steps, args.batch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="DataLoader workers of the reference loop (default: one per CPU, "
                         "as lucidrains' Trainer does)")
    ap.add_argument("--tools", default="facediff,premade,lucidrains,reference")
    ap.add_argument("--set", action="append", default=[], dest="overrides",
                    help="extra facediff config override (e.g. train.mixed_precision=no)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one tool, print JSON
    args = ap.parse_args()
    args.data = args.data.expanduser().resolve()
    torch.set_num_threads(os.cpu_count() or 1)

    runs = {
        "facediff": lambda: run_facediff(args, args.overrides),
        "premade": lambda: run_facediff_premade(args, args.overrides),
        "lucidrains": lambda: run_lucidrains(args),
        "reference": lambda: run_reference(args),
    }
    names = {"facediff": "facediff Trainer", "premade": "facediff, pre-made batch",
             "lucidrains": "lucidrains Trainer", "reference": "reference loop"}
    if args.one:  # a fresh process per tool: accelerate's state is process-wide
        t0 = time.perf_counter()
        r = runs[args.one]()
        r["wall"] = time.perf_counter() - t0
        print("RESULT " + json.dumps(r))
        return
    results = {}
    for tool in args.tools.split(","):
        cmd = [sys.executable, *sys.argv, "--one", tool]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not lines:
            sys.exit(f"{tool} failed:\n{out.stderr[-3000:]}")
        results[tool] = json.loads(lines[-1][7:])
        prec = f", mixed precision {results[tool]['precision']}, data path " \
            f"{results[tool]['data_ms']:.2f} ms/step" if "precision" in results[tool] else ""
        print(f"# {tool}: {[round(s, 1) for s in results[tool]['speeds']]} img/s "
              f"({results[tool]['wall']:.0f} s{prec})", flush=True)

    extra = f", facediff with {' '.join(args.overrides)}" if args.overrides else ""
    print(f"\n{args.size} px, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device cpu{extra}\n")
    print("| tool | params (M) | img/s (median) | windows | facediff's ratio |")
    print("|---|---|---|---|---|")
    ours = statistics.median(results["facediff"]["speeds"]) if "facediff" in results else None
    for tool, r in results.items():
        med = statistics.median(r["speeds"])
        params = f"{r['params'] / 1e6:.2f}" if "params" in r else "same"
        ratio = f"{ours / med:.2f}x" if ours and tool not in ("facediff", "premade") else ""
        spread = f"{min(r['speeds']):.1f}-{max(r['speeds']):.1f}"
        print(f"| {names[tool]} | {params} | {med:.1f} | {spread} | {ratio} |")


if __name__ == "__main__":
    main()
