"""The fixed held-out split of a face folder, as two folders of symlinks (train/, heldout/).

Every latent-diffusion number of this project (docs/latent.md) uses it: the first ``--n`` of
``numpy.random.default_rng(seed).permutation(N)`` of the folder's images in facediff's loading
order (sorted paths) are held out, the rest are the training set. Train on ``OUT/train``,
score against ``OUT/heldout``; ``OUT/train2000`` (``--n`` training images, the first of
``default_rng(seed + 1).permutation`` of the training set) gives the training-set number and,
against ``OUT/heldout``, the real-vs-real floor at the same n.

    python bench/split.py --data ../shared/datasets/celebahq-128 --out ~/data/celebahq128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facediff.data.sources.folder import find_images

SEED, HELD_OUT = 2026, 2000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="an image folder")
    p.add_argument("--out", required=True, help="where train/ and heldout/ are made")
    p.add_argument("--n", type=int, default=HELD_OUT, help="images held out")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args()
    files = find_images(args.data)
    order = np.random.default_rng(args.seed).permutation(len(files))
    out = Path(args.out).expanduser()
    train = order[args.n:]
    some = train[np.random.default_rng(args.seed + 1).permutation(len(train))[:args.n]]
    for name, idx in (("heldout", order[:args.n]), ("train", train), ("train2000", some)):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for i in sorted(idx):
            link = d / files[i].name
            if not link.exists():
                link.symlink_to(files[i].resolve())
        print(f"{d}: {len(idx)} images")


if __name__ == "__main__":
    main()
