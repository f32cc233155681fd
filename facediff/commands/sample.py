"""``facediff sample``: generate images (or an attribute grid) from a model."""

from __future__ import annotations

import argparse

from facediff.assets import MODEL_HELP
from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands

NAME = "sample"


def add_parser(commands: Commands) -> None:
    s = commands.add(NAME, "generate images from a trained model")
    s.add_argument("model", nargs="?", help=MODEL_HELP + " or --attr-grid")
    s.add_argument("--n", type=shared.positive("--n"), default=16, help="number of images")
    s.add_argument("--out", default="samples", help="output folder (default: samples)")
    shared.add_attr(s, "fix an attribute (conditional models), e.g. Smiling=1, race=Asian")
    s.add_argument("--attr-grid", metavar="NAMES",
                   help="write attr_grid.png: per attribute (comma-separated, or 'all') a row "
                        "off and a row on, one column per seed (--n seeds)")
    shared.add_sampling(s, batch_size=16)
    shared.add_device(s)
    s.add_argument("--no-grid", action="store_true", help="do not write grid.png")
    shared.add_progress(s)


def run(args: argparse.Namespace) -> int:
    settings = shared.sampling_settings(args)
    out = shared.writable_dir(args.out)
    model = shared.load_model(args, conditional=bool(args.attr or args.attr_grid))
    if args.attr_grid:
        from facediff.viz.attributes import attribute_grid

        which = None if args.attr_grid == "all" else shared.names(args.attr_grid)
        grid = attribute_grid(model, which, n_seeds=args.n, settings=settings,
                              base_attrs=args.attr, progress=not args.no_progress)
        out.mkdir(parents=True, exist_ok=True)
        grid.save(out / "attr_grid.png")
        print(f"wrote {out / 'attr_grid.png'}")
        return 0
    from facediff.data.transforms import array_to_image
    from facediff.viz.grid import make_grid

    s = model.settings(settings)
    imgs = model.sample_tensor(args.n, settings=s, attrs=args.attr,
                               progress=not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(imgs.numpy()):
        array_to_image(arr).save(out / f"sample_{i + 1:04d}.png")
    if not args.no_grid:
        make_grid(imgs).save(out / "grid.png")
    attrs = f", {' '.join(args.attr)} at guidance {s.guidance}" if args.attr else ""
    print(f"wrote {args.n} images{'' if args.no_grid else ' and grid.png'} to {out} "
          f"({s.describe()}{attrs}, model {model.source})")
    return 0
