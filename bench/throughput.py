"""Training throughput (img/s) of facediff's trainer on this machine, per preset.

Run by hand, not in CI:
    python bench/throughput.py --presets tiny simpsons64 [--data DIR] [--steps 30]

Without --data it draws synthetic faces. Reports the median img/s of several timed windows
after warm-up steps, measured around Trainer.train_step (the real loop's work per step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facediff.configure import resolve_config
from facediff.data.synthetic import make_faces
from facediff.model import count_parameters
from facediff.train.trainer import Trainer


def measure(preset: str, data: Path, steps: int, windows: int, overrides: list[str]) -> dict:
    cfg = resolve_config(preset=preset, overrides=[f"data.path={data}", *overrides])
    with tempfile.TemporaryDirectory() as run:
        tr = Trainer(cfg, run, progress=False)
        tr.train_net.train()
        for _ in range(3):  # warm-up
            tr.train_step()
        speeds = []
        for _ in range(windows):
            t0 = time.perf_counter()
            for _ in range(steps):
                loss, _ = tr.train_step()
            float(loss)  # wait for the device
            speeds.append(steps * cfg.train.batch_size / (time.perf_counter() - t0))
    return {"preset": preset, "size": cfg.data.image_size, "batch": cfg.train.batch_size,
            "params_M": count_parameters(tr.net) / 1e6, "img_s": statistics.median(speeds),
            "device": str(tr.device), "precision": tr.accelerator.mixed_precision}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "simpsons64"])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "faces"
            make_faces(data, 512, size=128)
        rows = [measure(p, data, args.steps, args.windows, args.overrides) for p in args.presets]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| preset | px | batch | params (M) | device | precision | img/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['size']} | {r['batch']} | {r['params_M']:.2f} | "
              f"{r['device']} | {r['precision']} | {r['img_s']:.1f} |")


if __name__ == "__main__":
    main()
