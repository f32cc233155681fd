"""The ``facediff eval`` and ``facediff classifier`` commands."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facediff.config import DataConfig
from facediff.errors import FacediffError

log = logging.getLogger("facediff")


def _number_list(cast: Callable[[str], float], minimum: float,
                 example: str) -> Callable[[str], list]:
    """Parse comma-separated numbers like 5,10,20, each at least ``minimum``."""
    def parse(text: str) -> list:
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers like {example}, got {text!r}") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(
                f"expected numbers of at least {minimum:g} like {example}, got {text!r}")
        return values

    return parse


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_parsers(add: Callable[[str, str], argparse.ArgumentParser],
                positive: Callable[[str], Callable[[str], int]],
                common: argparse.ArgumentParser) -> None:
    e = add("eval", "FID, KID and precision/recall of a model or an image folder")
    e.add_argument("model", nargs="?", help="exported model dir or run dir")
    e.add_argument("--images", help="instead of a model: score this folder of images")
    e.add_argument("--ref", help="reference dataset (default: the model's training data)")
    e.add_argument("--ref-split", help="reference split (CelebA: train/val/test; default: the "
                                       "model's training split, or all)")
    e.add_argument("--ref-n", type=positive("--ref-n"),
                   help="reference images to use (default: all)")
    e.add_argument("--n", type=positive("--n"),
                   help="images to generate (default 10000) or, with --images, to use "
                        "(default: all)")
    e.add_argument("--sampler", help="ddpm, ddim, dpmpp, unipc, euler or heun")
    e.add_argument("--steps", type=positive("--steps"))
    e.add_argument("--guidance", type=float, help="guidance scale (conditional models)")
    e.add_argument("--cond", choices=["ref", "none"], default="ref",
                   help="conditional models: draw conditions from the reference's labels "
                        "(ref) or leave them unspecified (none)")
    e.add_argument("--sweep-steps", type=_number_list(int, 1, "5,10,20"), metavar="5,10,20",
                   help="evaluate at each of these step counts")
    e.add_argument("--samplers", type=_names, metavar="ddim,dpmpp",
                   help="evaluate each of these samplers")
    e.add_argument("--sweep-guidance", type=_number_list(float, 0, "1,2,3"), metavar="1,2,3",
                   help="evaluate at each guidance scale (FID against control accuracy)")
    e.add_argument("--classifier", help="attribute classifier dir (facediff classifier "
                                        "train) to measure control accuracy")
    e.add_argument("--size", type=positive("--size"),
                   help="--images: resolution to compare at (default: the images' own)")
    e.add_argument("--inception", help="another TorchScript feature network file")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=positive("--batch-size"), default=64)
    e.add_argument("--kid-subset", type=positive("--kid-subset"), default=1000,
                   help="KID subset size (default 1000, or fewer if fewer images)")
    e.add_argument("--out", help="write results.{csv,md,json} (and sweep plots) here")
    e.add_argument("--save-samples", action="store_true",
                   help="also save the generated images under --out")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")

    c = add("classifier", "attribute classifier for measuring control accuracy")
    csub = c.add_subparsers(dest="classifier_command", required=True, parser_class=type(c))
    t = csub.add_parser("train", parents=[common],
                        help="train on a labelled dataset; report held-out accuracy")
    t.add_argument("data", help="labelled dataset (CelebA dir, UTKFace, MNIST, folder+labels)")
    t.add_argument("--out", required=True, help="classifier dir to write")
    t.add_argument("--labels", help="labels file for an image folder")
    t.add_argument("--conditions", type=_names, help="comma-separated conditions (default all)")
    t.add_argument("--size", type=positive("--size"), default=64, help="image size (64)")
    t.add_argument("--epochs", type=positive("--epochs"), default=15)
    t.add_argument("--batch-size", type=positive("--batch-size"), default=128)
    t.add_argument("--holdout", type=float, default=0.1,
                   help="held-out fraction where the dataset has no official test split")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")

    v = csub.add_parser("test", parents=[common],
                        help="score a trained classifier on labelled images: accuracy, "
                             "balanced accuracy (the yardstick for eval's control accuracy)")
    v.add_argument("classifier", help="classifier dir (facediff classifier train)")
    v.add_argument("data", help="labelled dataset (CelebA dir, UTKFace, MNIST, folder+labels)")
    v.add_argument("--split", help="CelebA: train/val/test (default test); HF: a split name")
    v.add_argument("--labels", help="labels file for an image folder")
    v.add_argument("--no-progress", action="store_true")


# ---- eval -------------------------------------------------------------------------------

def _image_size(folder: str) -> int:
    from PIL import Image

    from facediff.data.sources.folder import data_root, find_images

    files = find_images(data_root(folder))
    if not files:
        raise FacediffError(f"no images in {folder}")
    with Image.open(files[0]) as im:
        return max(im.size)


def _ref_config(args: argparse.Namespace, model_data: DataConfig | None,
                size: int) -> DataConfig:
    if model_data is None:
        if not args.ref:
            raise FacediffError("--images needs --ref DATA (the dataset to compare with)")
        return DataConfig(path=args.ref, image_size=size, split=args.ref_split)
    path = args.ref or model_data.path
    if not path or (not args.ref and not Path(path).expanduser().exists()):
        raise FacediffError(f"the model's training data ({path or 'unknown'}) is not here: "
                            "pass --ref DATA")
    same = Path(path).expanduser().resolve() == Path(model_data.path or "").expanduser().resolve()
    return dataclasses.replace(
        model_data, path=path, conditions=None, labels=model_data.labels if same else None,
        split=args.ref_split or (model_data.split if same else None), hflip=False)


def cmd_eval(args: argparse.Namespace) -> int:
    from facediff.cli import _device
    from facediff.eval.evaluate import evaluate_features, evaluate_model
    from facediff.eval.features import InceptionFeatures, extract_features
    from facediff.eval.reference import reference_features
    from facediff.eval.report import (
        markdown_table,
        plot_fid_vs_accuracy,
        plot_fid_vs_nfe,
        write_tables,
    )

    if bool(args.model) == bool(args.images):
        raise FacediffError("give a MODEL to sample, or --images DIR to score (not both)")
    progress = not args.no_progress
    device = _device(args.device)
    out = Path(args.out) if args.out else None
    if args.save_samples and out is None:
        raise FacediffError("--save-samples needs --out DIR")
    model = None
    if args.model:
        from facediff.api import load

        model = load(args.model, device=device)
        size = model.config.data.image_size
    else:
        if args.sweep_steps or args.samplers or args.sweep_guidance or args.classifier:
            raise FacediffError("sweeps and --classifier need a MODEL, not --images")
        size = args.size or _image_size(args.images)
    extractor = InceptionFeatures(args.inception, device)
    ref = reference_features(_ref_config(args, model.config.data if model else None, size),
                             extractor, n=args.ref_n, progress=progress)
    log.info("reference: %s, %d of %d images; features: %s", ref.description, len(ref),
             ref.total, extractor.ident)
    rows = []
    if model is None:
        from facediff.data import load_data

        data = load_data(DataConfig(path=args.images, source="folder", image_size=size,
                                    cache=False), progress=progress)
        idx = np.arange(len(data))
        if args.n and args.n < len(data):
            idx = np.sort(np.random.default_rng(args.seed).choice(len(data), args.n, False))
        feats = extract_features(data.images[idx], extractor, progress=progress,
                                 desc="image features")
        result = evaluate_features(ref, feats, images=args.images, size=size)
        print(result.scores.line())
        rows.append(result.row())
    else:
        classifier = None
        if args.classifier:
            from facediff.eval.classifier import load_classifier

            classifier = load_classifier(args.classifier)
        elif len(model.spec):
            log.info("conditional model: pass --classifier DIR (facediff classifier train) "
                     "to measure attribute control accuracy")
        s = model.config.sample
        samplers = args.samplers or [args.sampler or s.sampler]
        steps_list = args.sweep_steps or [args.steps or s.steps]
        guidances = args.sweep_guidance or [args.guidance if args.guidance is not None
                                            else s.guidance]
        n = args.n or 10000
        for sampler in samplers:
            for steps in steps_list:
                for g in guidances:
                    save = out / "samples" / f"{sampler}-{steps}-g{g:g}" \
                        if args.save_samples and out else None
                    result = evaluate_model(model, ref, extractor, n, sampler, steps,
                                            args.seed, g, args.cond, args.batch_size,
                                            classifier, save, progress)
                    acc = "" if not result.control else \
                        f"  control accuracy {np.mean(list(result.control.values())):.3f}"
                    guided = result.settings["guidance"] != "-"
                    print(f"{sampler} {steps} steps{f' guidance {g:g}' if guided else ''}: "
                          f"{result.scores.line()}{acc}  ({result.seconds:.0f} s)", flush=True)
                    rows.append(result.row())
    print()
    print(markdown_table(rows))
    if out is not None:
        write_tables(rows, out)
        title = f"{model.source if model else args.images} vs {ref.description}"
        if model is not None and len(rows) > 1 and len(set(r["guidance"] for r in rows)) == 1:
            plot_fid_vs_nfe(rows, out / "fid_vs_nfe.png", title)
        if model is not None and args.sweep_guidance and all("control_acc" in r for r in rows) \
                and len(set(r["sampler"] for r in rows)) == 1 \
                and len(set(r["steps"] for r in rows)) == 1:
            plot_fid_vs_accuracy(rows, out / "fid_vs_accuracy.png",
                                 f"{title}; {rows[0]['sampler']} {rows[0]['steps']} steps")
        print(f"wrote {out}/results.csv, results.md, results.json")
    return 0


# ---- classifier -------------------------------------------------------------------------

def _classifier_sets(args: argparse.Namespace) -> tuple[object, object, str]:
    """(train set, held-out set, how it was split)."""
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


def cmd_classifier(args: argparse.Namespace) -> int:
    if args.classifier_command == "test":
        return _classifier_test(args)
    from facediff.eval.classifier import save_classifier, train_classifier

    tr, te, how = _classifier_sets(args)
    clf = train_classifier(tr.images, tr.labels, tr.spec, te.images, te.labels,  # type: ignore
                           epochs=args.epochs, batch=args.batch_size, seed=args.seed,
                           progress=not args.no_progress)
    save_classifier(clf, args.out)
    print(f"trained on {len(tr.images)} images, tested on {len(te.images)} ({how}), "  # type: ignore
          f"{args.size} px")
    tested = {c.name: int((te.labels[:, j] >= 0).sum())  # type: ignore[attr-defined]
              for j, c in enumerate(clf.spec.conditions)}
    _print_scores({"accuracy": clf.accuracy, "balanced": clf.balanced,
                   "majority": clf.majority}, tested)
    print(f"wrote {args.out}")
    return 0


def _classifier_test(args: argparse.Namespace) -> int:
    from facediff.data import load_data
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
    tested = {c.name: int((labels[:, j] >= 0).sum()) for j, c in enumerate(clf.spec.conditions)}
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
