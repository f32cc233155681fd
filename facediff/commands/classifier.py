"""``facediff classifier``: train an attribute classifier (the yardstick for eval's control
accuracy), or test one on labelled images."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.config import DataConfig
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.data import ImageSet

NAME = "classifier"
log = logging.getLogger("facediff")


def add_parser(commands: Commands) -> None:
    c = commands.add(NAME, "attribute classifier for measuring control accuracy")
    sub = commands.nested(c, "classifier_command")
    tr = sub.add("train", "train on a labelled dataset; report held-out accuracy")
    tr.add_argument("data", help="labelled dataset (CelebA dir, UTKFace, MNIST, folder+labels)")
    tr.add_argument("--out", required=True, help="classifier dir to write")
    tr.add_argument("--labels", help="labels file for an image folder")
    tr.add_argument("--conditions", type=shared.names,
                    help="comma-separated conditions (default all)")
    tr.add_argument("--size", type=shared.positive("--size"), default=64, help="image size (64)")
    tr.add_argument("--epochs", type=shared.positive("--epochs"), default=15)
    tr.add_argument("--batch-size", type=shared.positive("--batch-size"), default=128)
    tr.add_argument("--holdout", type=float, default=0.1,
                   help="held-out fraction where the dataset has no official test split")
    tr.add_argument("--seed", type=int, default=0)
    shared.add_progress(tr)

    v = sub.add("test", "score a trained classifier on labelled images: accuracy, "
                        "balanced accuracy (the yardstick for eval's control accuracy)")
    v.add_argument("classifier", help="classifier dir (facediff classifier train)")
    v.add_argument("data", help="labelled dataset (CelebA dir, UTKFace, MNIST, folder+labels)")
    v.add_argument("--split", help="CelebA: train/val/test/heldout (default test); HF: a "
                                    "split name")
    v.add_argument("--labels", help="labels file for an image folder")
    shared.add_progress(v)


def run(args: argparse.Namespace) -> int:
    if args.classifier_command == "test":
        return _test(args)
    return _train(args)



def _classifier_sets(args: argparse.Namespace) -> tuple[ImageSet, ImageSet, str]:
    """(train set, held-out set, how it was split)."""
    import numpy as np

    from facediff.data import load_data
    from facediff.data.sources import detect_source

    base = DataConfig(path=args.data, labels=args.labels, conditions=args.conditions,
                      image_size=args.size)
    progress = not args.no_progress
    if args.labels is None and detect_source(args.data) == "celeba":
        tr = load_data(dataclasses.replace(base, split="train"), progress)
        te = load_data(dataclasses.replace(base, split="test"), progress)
        return tr, te, "CelebA's official train/test split"
    if not 0 < args.holdout < 1:
        raise FacediffError(f"--holdout must be between 0 and 1, got {args.holdout}")
    data = load_data(base, progress)
    if data.labels is None:
        raise FacediffError(f"{args.data} has no labels to train a classifier on (an image "
                            "folder needs --labels FILE)")
    perm = np.random.default_rng(args.seed).permutation(len(data))
    k = max(1, round(args.holdout * len(data)))
    te, tr = np.sort(perm[:k]), np.sort(perm[k:])
    if len(tr) < 2:
        raise FacediffError(f"{args.data} has too few images to train a classifier")
    return (dataclasses.replace(data, images=data.images[tr], labels=data.labels[tr]),
            dataclasses.replace(data, images=data.images[te], labels=data.labels[te]),
            f"a random {args.holdout:.0%} held out (seed {args.seed})")


def _print_scores(scores: dict[str, dict[str, float]], tested: dict[str, int]) -> None:
    import numpy as np

    print("| condition | accuracy | balanced accuracy | majority baseline | tested |")
    print("|---|---|---|---|---|")
    for name, n in tested.items():
        print(f"| {name} | {scores['accuracy'][name]:.3f} | {scores['balanced'][name]:.3f} | "
              f"{scores['majority'][name]:.3f} | {n} |")
    means = []
    for k in ("accuracy", "balanced", "majority"):
        known = [v for v in (scores[k].get(name, float("nan")) for name in tested)
                 if not np.isnan(v)]
        means.append(float(np.mean(known)) if known else float("nan"))
    print(f"| mean | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} | |")


def _train(args: argparse.Namespace) -> int:
    from facediff.data.conditions import UNSPECIFIED
    from facediff.eval.classifier import save_classifier, train_classifier

    shared.writable_dir(args.out)
    tr, te, how = _classifier_sets(args)
    clf = train_classifier(tr.images, tr.labels, tr.spec, val_images=te.images,
                           val_labels=te.labels, epochs=args.epochs, batch=args.batch_size,
                           seed=args.seed, progress=not args.no_progress)
    save_classifier(clf, args.out)
    print(f"trained on {len(tr.images)} images, tested on {len(te.images)} ({how}), "
          f"{args.size} px")
    tested = {c.name: int((te.labels[:, j] != UNSPECIFIED).sum())
              for j, c in enumerate(clf.spec.conditions)}
    _print_scores({"accuracy": clf.accuracy, "balanced": clf.balanced,
                   "majority": clf.majority}, tested)
    print(f"wrote {args.out}")
    return 0


def _test(args: argparse.Namespace) -> int:
    from facediff.data import load_data
    from facediff.data.conditions import UNSPECIFIED
    from facediff.data.sources import detect_source
    from facediff.eval.classifier import load_classifier, score_classifier
    from facediff.eval.evaluate import map_labels

    clf = load_classifier(args.classifier)
    split = args.split
    if split is None and args.labels is None and detect_source(args.data) == "celeba":
        split = "test"  # the official held-out partition
    cfg = DataConfig(path=args.data, labels=args.labels, split=split,
                     image_size=clf.model.image_size or 64,
                     channels=clf.model.channels)
    data = load_data(cfg, progress=not args.no_progress)
    if data.labels is None:
        raise FacediffError(f"{args.data} has no labels to test a classifier on (an image "
                            "folder needs --labels FILE)")
    labels = map_labels(clf.spec, data.spec, data.labels)
    tested = {c.name: int((labels[:, j] != UNSPECIFIED).sum())
              for j, c in enumerate(clf.spec.conditions)}
    if not any(tested.values()):
        names = [c.name for c in clf.spec.conditions]
        raise FacediffError(f"{args.data} has no labels for the classifier's conditions "
                            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    tested = {k: n for k, n in tested.items() if n}
    missing = len(clf.spec.conditions) - len(tested)
    if missing:
        log.warning("%d of the classifier's conditions have no labels in %s; left out",
                    missing, args.data)
    scores = score_classifier(clf.model, clf.spec, data.images, labels)
    print(f"{Path(args.classifier).name} on {len(data)} images of {args.data}"
          f"{f' ({split} split)' if split else ''}, {cfg.image_size} px")
    _print_scores(scores, tested)
    return 0
