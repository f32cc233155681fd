"""``facediff eval``: FID, KID and precision/recall of a model (with attribute control
accuracy) or of a folder of images, against a reference dataset."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facediff import distributed
from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.config import DataConfig
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.diffusion.samplers import SamplingSettings
    from facediff.distributed import Shard
    from facediff.eval.features import FeatureExtractor
    from facediff.eval.reference import Reference

NAME = "eval"
log = logging.getLogger("facediff")


def add_parser(commands: Commands) -> None:
    e = commands.add(NAME, "FID, KID and precision/recall of a model or an image folder")
    e.add_argument("model", nargs="?", help="exported model dir or run dir")
    e.add_argument("--images", help="instead of a model: score this folder of images (or "
                                    "dataset, with --images-split)")
    e.add_argument("--images-split", help="--images is a dataset (CelebA layout): score this "
                                          "split of it, e.g. train against --ref-split test "
                                          "for the real-vs-real floor")
    e.add_argument("--ref", help="reference dataset (default: the model's training data)")
    e.add_argument("--ref-split", help="reference split (CelebA: train/val/test/heldout; "
                                       "default: the model's training split, or all)")
    e.add_argument("--ref-n", type=shared.positive("--ref-n"),
                   help="reference images to use (default: all)")
    e.add_argument("-n", "--n", type=shared.positive("--n"),
                   help="images to generate (default 10000) or, with --images, to use "
                        "(default: all)")
    shared.add_sampling(e, batch_size=64,
                        seed_help="image i uses seed + i; also picks the condition rows and "
                                  "the --images subset (default 0)")
    e.add_argument("--cond", choices=["ref", "none"], default="ref",
                   help="conditional models: draw conditions from the reference's labels "
                        "(ref) or leave them unspecified (none)")
    e.add_argument("--sweep-steps", type=shared.number_list(int, 1, "5,10,20"), metavar="5,10,20",
                   help="evaluate at each of these step counts")
    e.add_argument("--samplers", type=shared.names, metavar="ddim,dpmpp",
                   help="evaluate each of these samplers")
    e.add_argument("--sweep-guidance", type=shared.number_list(float, 0, "1,2,3"), metavar="1,2,3",
                   help="evaluate at each guidance scale (FID against control accuracy)")
    e.add_argument("--classifier", help="attribute classifier dir (facediff classifier "
                                        "train) to measure control accuracy")
    e.add_argument("--size", type=shared.positive("--size"),
                   help="--images: resolution to compare at (default: the images' own)")
    e.add_argument("--inception", help="another TorchScript feature network file")
    e.add_argument("--kid-subset", type=shared.positive("--kid-subset"), default=1000,
                   help="KID subset size (default 1000, or fewer if fewer images)")
    e.add_argument("--out", help="write results.{csv,md,json} (and sweep plots) here")
    e.add_argument("--save-samples", action="store_true",
                   help="also save the generated images under --out")
    shared.add_device(e)
    shared.add_progress(e)


def run(args: argparse.Namespace) -> int:
    from facediff.device import resolve_device
    from facediff.eval.features import InceptionFeatures
    from facediff.eval.reference import reference_features
    from facediff.eval.report import markdown_table

    # Check the request.
    if bool(args.model) == bool(args.images):
        raise FacediffError("give a MODEL to sample, or --images DIR to score (not both)")
    out = shared.writable_dir(args.out) if args.out else None
    if args.save_samples and out is None:
        raise FacediffError("--save-samples needs --out DIR")
    if args.images and (args.sweep_steps or args.samplers or args.sweep_guidance
                        or args.classifier):
        raise FacediffError("sweeps and --classifier need a MODEL, not --images")
    if args.images_split and not (args.images and args.size):
        raise FacediffError("--images-split needs --images DATA and --size PX")
    settings = shared.sampling_settings(args)
    for name in args.samplers or []:
        shared.check_sampler(name)
    here = distributed.shard()
    if args.images and not here.main:  # a folder is scored once, by the main process
        here.barrier()
        return 0
    device = distributed.device_for(args.device, here, resolve_device)

    # Load the model (or find the folder's size) and the reference features.
    model = None
    if args.model:
        from facediff.api import load

        model = load(args.model, device=device, precision=args.precision)
        size = model.config.data.image_size
    else:
        size = args.size or _image_size(args.images)
    extractor = InceptionFeatures(args.inception, device)
    with here.main_first():  # the main process fills the reference cache; the rest read it
        ref = reference_features(_ref_config(args, model.config.data if model else None, size),
                                 extractor, n=args.ref_n,
                                 progress=not args.no_progress and here.main)
    log.info("reference: %s, %d of %d images; features: %s", ref.description, len(ref),
             ref.total, extractor.ident)

    # Score.
    if model is None:
        rows = [_score_folder(args, ref, extractor, size)]
        here.barrier()
    else:
        rows = _score_model(args, model, ref, extractor, settings, here)
    if not here.main:
        return 0

    # Report.
    print()
    print(markdown_table(rows))
    if out is not None:
        _write(args, rows, out, model, ref)
    return 0


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
    """The reference dataset: --ref, else the model's training data (same split and crop)."""
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


def _score_folder(args: argparse.Namespace, ref: Reference, extractor: FeatureExtractor,
                  size: int) -> dict[str, Any]:
    """The scores of --images (all, or a seeded --n of them)."""
    import numpy as np

    from facediff.data import load_data
    from facediff.eval.evaluate import evaluate_features
    from facediff.eval.features import extract_features

    progress = not args.no_progress
    if args.images_split:  # a dataset's split, cropped as training crops it
        cfg = DataConfig(path=args.images, image_size=size, split=args.images_split,
                         hflip=False, cache=False)
    else:
        cfg = DataConfig(path=args.images, source="folder", image_size=size, cache=False)
    data = load_data(cfg, progress=progress)
    idx = np.arange(len(data))
    if args.n and args.n < len(data):
        idx = np.sort(np.random.default_rng(args.seed).choice(len(data), args.n, False))
    feats = extract_features(data.images[idx], extractor, progress=progress,
                             desc="image features")
    result = evaluate_features(ref, feats, images=args.images, size=size)
    print(result.scores.line())
    return result.row()


def _score_model(args: argparse.Namespace, model: FaceModel, ref: Reference,
                 extractor: FeatureExtractor, settings: SamplingSettings,
                 here: Shard) -> list[dict[str, Any]]:
    """One row per sampler x steps x guidance of the sweep (one row without a sweep)."""
    import numpy as np

    from facediff.eval.evaluate import evaluate_model

    classifier = None
    if args.classifier:
        from facediff.eval.classifier import load_classifier

        classifier = load_classifier(args.classifier)
    elif len(model.spec):
        log.info("conditional model: pass --classifier DIR (facediff classifier train) "
                 "to measure attribute control accuracy")
    base = model.settings(settings)
    out = Path(args.out) if args.out else None
    rows = []
    for sampler in args.samplers or [base.sampler]:
        for steps in args.sweep_steps or [base.steps]:
            for g in args.sweep_guidance or [base.guidance]:
                s = base.override(sampler=sampler, steps=steps, guidance=g)
                tag = f"{sampler}-{steps}-g{g:g}" + ("" if model.dtype == "fp32"
                                                     else f"-{model.dtype}")
                save = out / "samples" / tag if args.save_samples and out else None
                result = evaluate_model(model, ref, extractor, args.n or 10000, settings=s,
                                        cond=args.cond, classifier=classifier, save_dir=save,
                                        progress=not args.no_progress, shard=here)
                acc = "" if not result.control else \
                    f"  control accuracy {np.mean(list(result.control.values())):.3f}"
                guided = result.settings["guidance"] != "-"
                if here.world > 1:
                    result.settings["processes"] = here.world
                if not here.main:
                    continue
                print(f"{sampler} {steps} steps{f' guidance {g:g}' if guided else ''}: "
                      f"{result.scores.line()}{acc}  ({result.seconds:.0f} s)", flush=True)
                rows.append(result.row())
    return rows


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], out: Path,
           model: FaceModel | None, ref: Reference) -> None:
    """results.{csv,md,json}, and the sweep's plots where the sweep has one axis."""
    from facediff.eval.report import plot_fid_vs_accuracy, plot_fid_vs_nfe, write_tables

    write_tables(rows, out)
    title = f"{model.source if model else args.images} vs {ref.description}"
    if model is not None and len(rows) > 1 and len({r["guidance"] for r in rows}) == 1:
        plot_fid_vs_nfe(rows, out / "fid_vs_nfe.png", title)
    if model is not None and args.sweep_guidance and all("control_acc" in r for r in rows) \
            and len({r["sampler"] for r in rows}) == 1 and len({r["steps"] for r in rows}) == 1:
        plot_fid_vs_accuracy(rows, out / "fid_vs_accuracy.png",
                             f"{title}; {rows[0]['sampler']} {rows[0]['steps']} steps")
    print(f"wrote {out}/results.csv, results.md, results.json")
