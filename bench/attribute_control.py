"""Attribute control: how often generated faces show the requested attribute value.

Run by hand, not in CI:
    python bench/attribute_control.py MODEL --data ../shared/datasets/celeba-6k \
        --guidance 1 3 5 --n 32 --steps 20 [--classifier DIR]

Trains (or loads) a small attribute classifier on the dataset's train split at the model's
resolution, reports its test-split accuracy, then for each binary attribute of the model and
each guidance scale samples --n faces with the attribute on and --n with it off (the other
attributes unspecified, the same seeds) and reports the fraction the classifier judges to show
the requested value. The classifier's positive rate on unconditional samples is the baseline.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import facediff
from facediff.config import DataConfig
from facediff.data import load_data
from facediff.eval.classifier import load_classifier, save_classifier, train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--classifier", type=Path, help="load from / save to this dir")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    model = facediff.load(args.model, device="cpu")
    names = [c.name for c in model.spec.conditions if c.kind == "binary"]
    size = model.config.data.image_size
    if args.classifier and (args.classifier / "classifier.json").is_file():
        clf = load_classifier(args.classifier)
    else:
        common = {"path": args.data, "image_size": size, "conditions": names}
        tr = load_data(DataConfig(split="train", **common), progress=False)
        te = load_data(DataConfig(split="test", **common), progress=False)
        t0 = time.perf_counter()
        clf = train_classifier(tr.images, tr.labels, tr.spec, val_images=te.images,
                               val_labels=te.labels, epochs=args.epochs)
        print(f"classifier: trained on {len(tr)} images, tested on {len(te)}, "
              f"{time.perf_counter() - t0:.0f} s")
        if args.classifier:
            save_classifier(clf, args.classifier)
    cols = [clf.spec.names.index(n) for n in names]

    uncond = model.sample_tensor(2 * args.n, args.steps, seed=10_000)
    base = clf.model.predict(uncond).numpy()[:, cols].mean(axis=0)
    acc: dict[float, list[float]] = {}
    for w in args.guidance:
        acc[w] = []
        for j, name in enumerate(names):
            hits = []
            for value in (1, 0):
                imgs = model.sample_tensor(args.n, args.steps, seed=0, batch_size=args.n,
                                           attrs=[f"{name}={value}"], guidance=w)
                pred = clf.model.predict(imgs).numpy()[:, cols[j]]
                hits.append(pred == value)
            acc[w].append(float(np.concatenate(hits).mean()))
    head = " | ".join(f"control acc, guidance {w:g}" for w in args.guidance)
    print(f"\n{model.source}: {args.n} samples on + {args.n} off per attribute, "
          f"{model.config.sample.sampler} {args.steps} steps; torch {torch.__version__}")
    print(f"| attribute | classifier test acc (majority) | unconditional positive rate | "
          f"{head} |")
    print("|---|---|---|" + "---|" * len(args.guidance))
    for j, name in enumerate(names):
        cells = " | ".join(f"{acc[w][j]:.2f}" for w in args.guidance)
        print(f"| {name} | {clf.accuracy[name]:.2f} ({clf.majority[name]:.2f}) | "
              f"{base[j]:.2f} | {cells} |")
    means = " | ".join(f"{np.mean(acc[w]):.2f}" for w in args.guidance)
    print(f"| mean | {np.mean([clf.accuracy[n] for n in names]):.2f} | | {means} |")


if __name__ == "__main__":
    main()
