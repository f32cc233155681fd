"""Data loading: decoding JPEGs every epoch vs facediff's decoded-image cache.

Run by hand, not in CI:
    python bench/cache.py --data ../shared/datasets/celebahq-64 [--n 4096] [--size 32]

Prints (1) loader throughput: a PyTorch DataLoader that opens, decodes and resizes each JPEG
per item (what the scripts we replace do), with 0 and 2 workers, against batches indexed from
facediff's cache (cold build time too); (2) training throughput of the tiny preset when each
step waits for a JPEG batch vs when it indexes the cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facediff.config import DataConfig
from facediff.configure import resolve_config
from facediff.data import load_data
from facediff.data.sources.folder import find_images
from facediff.data.transforms import image_to_array, uint8_to_model
from facediff.train.trainer import BatchStream, Trainer


class JpegDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as img:
            return torch.from_numpy(image_to_array(img, self.size, 3, True).copy())


def loader_rate(files: list[Path], size: int, batch: int, workers: int, batches: int) -> float:
    dl = torch.utils.data.DataLoader(JpegDataset(files, size), batch_size=batch, shuffle=True,
                                     num_workers=workers, drop_last=True)
    it = iter(dl)
    next(it)  # start-up
    t0 = time.perf_counter()
    for _ in range(batches):
        x = next(it)
        uint8_to_model(x)
    return batches * batch / (time.perf_counter() - t0)


def cache_rate(images: torch.Tensor, batch: int, batches: int) -> float:
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        idx = torch.randint(0, len(images), (batch,), generator=g)
        uint8_to_model(images[idx])
    return batches * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=4096, help="images used (the first N)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    files = find_images(args.data)[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "data"
        sub.mkdir()
        for f in files:  # the same N files for both paths
            (sub / f.name).symlink_to(f.resolve())
        cfg = DataConfig(path=str(sub), source="folder", image_size=args.size,
                         cache_dir=str(Path(tmp) / "cache"))
        t0 = time.perf_counter()
        load_data(cfg, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm_set = load_data(cfg, progress=False)
        warm = time.perf_counter() - t0
        images = torch.from_numpy(np.array(warm_set.images))
        batches = max(10, 2048 // args.batch)
        rows = [("DataLoader, JPEG decode per item, 0 workers",
                 loader_rate(files, args.size, args.batch, 0, batches)),
                ("DataLoader, JPEG decode per item, 2 workers",
                 loader_rate(files, args.size, args.batch, 2, batches)),
                ("facediff cache (in memory, indexed batches)",
                 cache_rate(images, args.batch, batches))]
        print(f"{len(files)} images at {args.size}px, batch {args.batch}; cache build (cold) "
              f"{cold:.1f} s = {len(files) / cold:.0f} img/s, reload (warm) {warm:.2f} s")
        print("| loader | img/s |\n|---|---|")
        for name, rate in rows:
            print(f"| {name} | {rate:.0f} |")

        tcfg = resolve_config(preset="tiny", overrides=[
            f"data.path={sub}", f"data.image_size={args.size}",
            f"data.cache_dir={Path(tmp) / 'cache'}", f"train.batch_size={args.batch}"])
        tr = Trainer(tcfg, Path(tmp) / "run", progress=False)
        for _ in range(3):
            tr.train_step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            tr.train_step()
        cached = args.steps * args.batch / (time.perf_counter() - t0)
        # the same step, but its images come from decoding JPEGs first (0 workers)
        dl = iter(torch.utils.data.DataLoader(JpegDataset(files, args.size),
                                              batch_size=args.batch, shuffle=True,
                                              drop_last=True))
        rates = []
        original = tr.train_images
        t0 = time.perf_counter()
        for _ in range(args.steps):
            batch = next(dl)
            tr.train_images = batch  # the step's indices are remapped onto this batch
            tr.stream = BatchStream(len(batch), args.batch, 0)
            tr.train_step()
        rates.append(args.steps * args.batch / (time.perf_counter() - t0))
        tr.train_images = original
        print("| training step, tiny preset | img/s |\n|---|---|")
        jpeg = statistics.median(rates)
        print(f"| images decoded from JPEG each step (0 workers) | {jpeg:.1f} |")
        print(f"| images indexed from the cache | {cached:.1f} |")


if __name__ == "__main__":
    main()
