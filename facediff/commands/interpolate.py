"""``facediff interpolate``: a strip between two seeds, or along one attribute."""

from __future__ import annotations

import argparse

from facediff.assets import MODEL_HELP
from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.errors import FacediffError

NAME = "interpolate"


def add_parser(commands: Commands) -> None:
    it = commands.add(NAME, "interpolate between seeds or along an attribute")
    it.add_argument("model", nargs="?", help=MODEL_HELP + " or --sweep")
    it.add_argument("--seeds", default="0,1", help="two seeds to interpolate between (A,B)")
    it.add_argument("--sweep", metavar="NAME",
                    help="instead: fix the noise and sweep this attribute from off to on")
    it.add_argument("--from", dest="value_from", help="--sweep: start value (default off)")
    it.add_argument("--to", dest="value_to", help="--sweep: end value (default on)")
    it.add_argument("--rows", type=shared.positive("--rows"), default=4,
                    help="--sweep: one row per seed, from --seed")
    it.add_argument("--frames", type=shared.positive("--frames"), default=8)
    shared.add_attr(it, "attributes held fixed (conditional models)")
    shared.add_sampling(it)
    it.add_argument("--out", default="interpolation.png", help="grid PNG to write")
    shared.add_device(it)


def run(args: argparse.Namespace) -> int:
    from facediff.diffusion.editing import interpolate_attribute, interpolate_seeds
    from facediff.viz.grid import make_grid

    settings = shared.sampling_settings(args)
    out = shared.writable_file(args.out)
    model = shared.load_model(args, conditional=bool(args.sweep or args.attr))
    if args.sweep:
        imgs = interpolate_attribute(model, args.sweep, args.frames, rows=args.rows,
                                     value_from=args.value_from, value_to=args.value_to,
                                     attrs=args.attr, settings=settings)
        what = f"{args.sweep} swept over {args.frames} frames for seeds {args.seed}.." \
            f"{args.seed + args.rows - 1}"
    else:
        try:
            a, b = (int(x) for x in args.seeds.split(","))
        except ValueError:
            raise FacediffError(f"--seeds must be two integers A,B, got {args.seeds!r}") \
                from None
        imgs = interpolate_seeds(model, a, b, args.frames, settings=settings, attrs=args.attr)
        what = f"seed {a} to seed {b} in {args.frames} frames"
    make_grid(imgs, nrow=args.frames).save(out)
    print(f"wrote {out} ({what})")
    return 0
