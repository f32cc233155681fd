"""The real-vs-real floor beside a model's FID: ``--n`` real images scored against the same
``--ref-n`` reference images ``facediff eval --ref DATA --ref-n N`` uses (run by hand).

    python bench/floor.py --data ../shared/datasets/celebahq-128 --size 32 --ref-n 5000 --n 1000
    python bench/floor.py --data ~/data/celebahq128/train --size 64 --n 1000 \
        --against ~/data/celebahq128/heldout      # the floor beside a held-out FID

``facediff eval`` takes its ``--ref-n`` references as the first ``ref-n`` of a fixed random
order of the dataset; the floor's images are the next ``--n`` of that order, so they are real
faces of the same data, prepared the same way, that are not among the references. A model's FID
at the same n cannot be expected below this number: it is what sampling noise alone costs.
With ``--against DIR``, the first ``--n`` of ``--data``'s order are scored against all of DIR
(``facediff eval --ref DIR``'s references): the floor beside a FID against a held-out split.
"""

from __future__ import annotations

import argparse

from facediff.config import DataConfig
from facediff.eval.features import InceptionFeatures
from facediff.eval.metrics import score
from facediff.eval.reference import reference_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--ref-n", type=int, default=5000)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--split", help="the dataset's split (e.g. train for celeba-6k)")
    ap.add_argument("--against", help="score against all of this dataset instead")
    args = ap.parse_args()
    net = InceptionFeatures()
    cfg = DataConfig(path=args.data, image_size=args.size, split=args.split)
    if args.against:
        refs = reference_features(DataConfig(path=args.against, image_size=args.size),
                                  net).features
        fakes = reference_features(cfg, net, n=args.n).features
        what = f"all {len(refs)} of {args.against}"
    else:
        feats = reference_features(cfg, net, n=args.ref_n + args.n).features
        refs, fakes = feats[:args.ref_n], feats[args.ref_n:args.ref_n + args.n]
        what = f"the {len(refs)} references of `facediff eval --ref-n {args.ref_n}`"
    if len(fakes) < args.n:
        raise SystemExit(f"error: too few images in {args.data} for --ref-n {args.ref_n} "
                         f"and --n {args.n}")
    s = score(refs, fakes)
    print(f"real-vs-real floor at {args.size} px: {s.n} real images of {args.data} against "
          f"{what}")
    print("| FID | KID x1e-3 | precision | recall |\n|---|---|---|---|")
    print(f"| {s.fid:.2f} | {s.kid * 1e3:.2f} ± {s.kid_std * 1e3:.2f} | {s.precision:.3f} | "
          f"{s.recall:.3f} |")


if __name__ == "__main__":
    main()
