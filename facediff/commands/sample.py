"""``facediff sample``: generate images (or an attribute grid) from a model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from facediff.assets import MODEL_HELP
from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from pathlib import Path

    from facediff.api import FaceModel

NAME = "sample"


def add_parser(commands: Commands) -> None:
    s = commands.add(NAME, "generate images from a trained model")
    s.add_argument("model", nargs="?", help=MODEL_HELP + " or --attr-grid")
    s.add_argument("-n", "--n", type=shared.positive("--n"), default=16, help="number of images")
    s.add_argument("--out", default="samples", help="output folder (default: samples)")
    shared.add_attr(s, "fix an attribute (conditional models), e.g. Smiling=1, race=Asian")
    s.add_argument("--attr-grid", metavar="NAMES",
                   help="write attr_grid.png: per attribute (comma-separated, or 'all') a row "
                        "off and a row on, one column per seed (--n seeds)")
    s.add_argument("--like", metavar="PHOTO",
                   help="faces like a photo's: the attribute classifier shipped with the model "
                        "reads the photo's face, and the faces are generated with those "
                        "attributes (printed; --attr overrides one)")
    s.add_argument("--keep", type=shared.names, metavar="NAMES",
                   help="--like: only these of the attributes read (comma-separated; default: "
                        "those read with at least --min-confidence)")
    s.add_argument("--min-confidence", type=float, metavar="P",
                   help="--like: attributes read less surely are left to the model "
                        "(default 0.75: facediff.faces.like.MIN_CONFIDENCE)")
    s.add_argument("--classifier", metavar="DIR",
                   help="--like: the classifier to read the photo with (default: the model's)")
    shared.add_face(s)
    shared.add_sampling(s, batch_size=16)
    shared.add_device(s)
    s.add_argument("--no-grid", action="store_true", help="do not write grid.png")
    shared.add_progress(s)


def run(args: argparse.Namespace) -> int:
    from facediff import distributed

    settings = shared.sampling_settings(args)
    out = shared.writable_dir(args.out)
    here = distributed.shard()
    if (args.keep or args.classifier) and not args.like:
        raise FacediffError("--keep and --classifier go with --like PHOTO")
    if args.min_confidence is not None and not 0.0 <= args.min_confidence <= 1.0:  # NaN too
        raise FacediffError(f"--min-confidence must be in [0, 1], got {args.min_confidence}")
    model = shared.load_model(args, conditional=bool(args.attr or args.attr_grid or args.like),
                              shard=here)
    if args.like:
        args.attr = _like(args, model, out, main=here.main) + args.attr  # --attr wins
    if args.attr_grid:
        if not here.main:  # one figure: the main process draws it
            return 0
        from facediff.viz.attributes import attribute_grid

        which = None if args.attr_grid == "all" else shared.names(args.attr_grid)
        grid = attribute_grid(model, which, n_seeds=args.n, settings=settings,
                              base_attrs=args.attr, progress=not args.no_progress)
        out.mkdir(parents=True, exist_ok=True)
        grid.save(out / "attr_grid.png")
        print(f"wrote {out / 'attr_grid.png'}")
        return 0
    import torch
    from tqdm.auto import tqdm

    from facediff.data.transforms import array_to_image
    from facediff.viz.grid import make_grid

    s = model.settings(settings)
    starts = here.starts(args.n, s.batch_size)
    mine = sum(min(s.batch_size, args.n - b) for b in starts)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    with tqdm(total=mine, desc=f"sampling ({s.sampler}, {s.steps} steps)", unit="img",
              disable=args.no_progress or not here.main) as bar:
        for start in starts:  # image i: seed + i, in the batches one process would make
            m = min(s.batch_size, args.n - start)
            imgs = model.sample_tensor(m, settings=s, seed=s.seed + start, batch_size=m,
                                       attrs=args.attr)
            for i, arr in enumerate(imgs.numpy()):
                array_to_image(arr).save(out / f"sample_{start + i + 1:04d}.png")
            parts.append((start, imgs if not args.no_grid else None))
            bar.update(m)
    gathered = here.gather(parts)  # also waits for every process's files
    if not here.main:
        return 0
    if not args.no_grid:
        make_grid(torch.cat(gathered)).save(out / "grid.png")
    attrs = f", {' '.join(args.attr)} at guidance {s.guidance}" if args.attr else ""
    procs = f", {here.world} processes" if here.world > 1 else ""
    print(f"wrote {args.n} images{'' if args.no_grid else ' and grid.png'} to {out} "
          f"({s.describe()}, {model.dtype}{attrs}, model {model.source}{procs})")
    return 0


def _like(args: argparse.Namespace, model: FaceModel, out: Path, *, main: bool) -> list[str]:
    """The ``--attr`` requests read from the ``--like`` photo (and its aligned crop written
    as like_photo.png)."""
    from facediff.faces.like import (
        MIN_CONFIDENCE,
        keep_readings,
        model_classifier,
        photo_attributes,
    )

    if not len(model.spec):
        raise FacediffError(f"--like needs an attribute model; {model.source} is "
                            "unconditional")
    clf = model_classifier(model, args.classifier)
    readings, aligned = photo_attributes(args.like, model, clf, align=args.align,
                                         face=args.face, detector=args.detector)
    if not readings:
        raise FacediffError(f"the classifier reads none of {model.source}'s attributes")
    least = MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
    kept = keep_readings(readings, args.keep, least)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        aligned.image.save(out / "like_photo.png")
        which = f" (face {aligned.index})" if aligned.index else " (centre crop)"
        print(f"read from {args.like}{which}: {', '.join(map(str, readings))}")
        left = [r.name for r in readings if r not in kept]
        if left:
            print(f"left to the model: {', '.join(left)}"
                  f"{'' if args.keep else f' (read less surely than {least})'}")
    return [r.request for r in kept]
