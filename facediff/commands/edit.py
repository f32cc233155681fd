"""``facediff edit``: change attributes of a real face photo (DDIM inversion or SDEdit)."""

from __future__ import annotations

import argparse
import logging

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.errors import FacediffError

log = logging.getLogger("facediff")

NAME = "edit"


def add_parser(commands: Commands) -> None:
    ed = commands.add(NAME, "edit attributes of a real face photo")
    ed.add_argument("photo", help="a face photo (centre-cropped and resized to the model)")
    ed.add_argument("--model", help="a conditional model: dir or bundled name (default: "
                                     "the bundled attribute model)")
    shared.add_attr(ed, "attributes to set, e.g. Eyeglasses=1")
    ed.add_argument("--from-attr", action="append", default=[], metavar="NAME=VALUE",
                    help="the photo's own attributes (default: unspecified)")
    ed.add_argument("--method", choices=["ddim", "sdedit"], default="ddim",
                    help="ddim: invert then regenerate; sdedit: noise to --strength, denoise")
    ed.add_argument("--strength", type=float, default=0.6, help="sdedit: 0..1")
    # editing always runs deterministic DDIM: no --sampler or --eta
    shared.add_sampling(ed, flags=("steps", "seed", "guidance", "guidance_rescale"), steps=50,
                        guidance=3.0, seed_help="seed of SDEdit's noise (default 0)")
    ed.add_argument("--out", default="edit.png", help="before | after PNG to write")
    shared.add_device(ed)


def run(args: argparse.Namespace) -> int:
    import torch

    from facediff.data.conditions import UNSPECIFIED
    from facediff.data.transforms import model_to_uint8
    from facediff.diffusion.editing import edit_photo, edit_settings, load_photo
    from facediff.viz.grid import make_grid

    if not args.attr:
        raise FacediffError("give at least one --attr NAME=VALUE to change")
    if not 0.0 < args.strength <= 1.0:  # NaN fails this too
        raise FacediffError(f"--strength must be in (0, 1], got {args.strength}")
    out = shared.writable_file(args.out)
    from facediff.api import load_editor

    distilled = shared.load_model(args, conditional=True)
    model = load_editor(distilled)  # a few-step student cannot invert: its teacher edits
    if model is not distilled:
        log.info("editing with %s, the teacher of the distilled %s", model.source,
                 distilled.source)
    settings = edit_settings(model, shared.sampling_settings(args))
    photo = load_photo(args.photo, model).to(model.device)
    src = model.labels(args.from_attr)
    dst = src.clone()
    changes = model.labels(args.attr)
    changed = changes != UNSPECIFIED
    dst[changed] = changes[changed]
    after = edit_photo(model, photo, src, dst, method=args.method, strength=args.strength,
                       settings=settings)
    before = model_to_uint8(photo.cpu())[0]
    make_grid(torch.stack([before, after]), nrow=2).save(out)
    print(f"wrote {out} (before | after: {' '.join(args.attr)}, {args.method}, "
          f"{settings.steps} steps, guidance {settings.guidance})")
    return 0
