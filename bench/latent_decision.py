"""The 64 px decision (docs/latent.md): pixel-space against latent diffusion at equal CPU time.

For each model: FID/KID of ``--n`` samples against the held-out faces and against ``--n``
training faces (the samples are generated once, saved, and scored twice), the real-vs-real
floor (those training faces against the held-out ones), a grid of faces side by side, and
the seconds to sample 1,000 faces (decoding included) on this machine. Every score goes
through ``facediff eval``, the commands printed as they run.

    python bench/split.py --data ../shared/datasets/celebahq-128 --out ~/data/celebahq128
    python bench/latent_decision.py --split ~/data/celebahq128 --out ~/runs/decision \\
        pixel=~/runs/pixel64 latent=~/runs/latent64
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def facediff(*args: str) -> None:
    cmd = [sys.executable, "-m", "facediff", *args]
    print("$ facediff " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(cmd, check=True)


def scores(folder: Path) -> dict[str, float]:
    rows = json.loads((folder / "results.json").read_text())
    row = rows[0] if isinstance(rows, list) else rows.get("rows", [rows])[0]
    return {k: row[k] for k in ("fid", "kid", "kid_std", "precision", "recall", "n", "n_ref")
            if k in row}


def time_1000(model_dir: str, steps: int) -> float:
    """Seconds to sample 1,000 faces (batch 250, the model's sampler), after a warm-up."""
    import torch

    import facediff as fd

    model = fd.load(model_dir, device="cpu")
    model.sample_tensor(8, steps=steps, batch_size=8)  # warm-up
    torch.manual_seed(0)
    t = time.perf_counter()
    model.sample_tensor(1000, steps=steps, batch_size=250)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="NAME=RUN_DIR")
    p.add_argument("--split", required=True, help="bench/split.py's folder")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--skip-fid", action="store_true", help="timing and grid only")
    p.add_argument("--skip-timing", action="store_true",
                   help="no timing (measure it later on an idle machine)")
    args = p.parse_args()
    split, out = Path(args.split).expanduser(), Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    if not args.skip_fid:
        facediff("eval", "--images", str(split / "train2000"), "--ref", str(split / "heldout"),
                 "--size", str(args.size), "--n", str(args.n), "--out", str(out / "floor"),
                 "--no-progress")
        results["real-vs-real floor"] = {"heldout": scores(out / "floor")}
    grids = []
    for spec in args.models:
        name, run = spec.split("=", 1)
        run = str(Path(run).expanduser())
        r: dict = {}
        if not args.skip_fid:
            held = out / f"{name}-heldout"
            facediff("eval", run, "--ref", str(split / "heldout"), "--n", str(args.n),
                     "--steps", str(args.steps), "--save-samples", "--out", str(held),
                     "--no-progress")
            samples = next((held / "samples").iterdir())
            facediff("eval", "--images", str(samples), "--ref", str(split / "train2000"),
                     "--n", str(args.n), "--out", str(out / f"{name}-train"), "--no-progress")
            r = {"heldout": scores(held), "train": scores(out / f"{name}-train")}
        if not args.skip_timing:
            r["seconds_per_1000"] = time_1000(run, args.steps)
        print(f"{name}: {r}", flush=True)
        results[name] = r
        grids.append(_faces(run, args.steps))
    name = "summary.json" if not args.skip_fid else "timing.json"
    (out / name).write_text(json.dumps(results, indent=2))
    _figure(grids, [s.split("=", 1)[0] for s in args.models], split / "heldout",
            out / f"faces-{args.size}.png", args.size)
    print(json.dumps(results, indent=2))


def _faces(run: str, steps: int) -> np.ndarray:
    import facediff as fd

    return fd.load(run, device="cpu").sample_tensor(16, steps=steps, seed=0).numpy()


def _figure(grids: list[np.ndarray], names: list[str], real_dir: Path, path: Path,
            size: int) -> None:
    """Rows of 16: held-out real faces, then each model's (seeds 0-15)."""
    from PIL import Image

    from facediff.viz.grid import make_grid

    files = sorted(real_dir.iterdir())[:16]
    real = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size),
                                                                   Image.LANCZOS))
                     for f in files])
    rows = [real, *grids]
    make_grid(np.concatenate(rows), nrow=16).save(path)
    print(f"{path}: rows = held-out faces, {', '.join(names)}")


if __name__ == "__main__":
    main()
