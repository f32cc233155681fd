"""``facediff edit``: change attributes of a real face photo (DDIM inversion or SDEdit): the
face is found and aligned to the model's crop, edited, and pasted back into the photo."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.errors import FacediffError

log = logging.getLogger("facediff")

NAME = "edit"


def add_parser(commands: Commands) -> None:
    ed = commands.add(NAME, "edit attributes of a real face photo")
    ed.add_argument("photo", help="a photo with a face (found, aligned to the model's crop, "
                                   "edited and pasted back)")
    ed.add_argument("--model", help="a model dir, run dir, diffusers pipeline, Hub id or "
                                     "bundled name (default: the bundled attribute model); "
                                     "an unconditional one re-draws with --method sdedit")
    shared.add_attr(ed, "attributes to set, e.g. Eyeglasses=1")
    ed.add_argument("--from-attr", action="append", default=[], metavar="NAME=VALUE",
                    help="the photo's own attributes (default: unspecified)")
    ed.add_argument("--method", choices=["ddim", "sdedit"], default="ddim",
                    help="ddim: invert then regenerate; sdedit: noise to --strength, denoise "
                         "(with no --attr: the model's own take on the face)")
    ed.add_argument("--strength", type=float, default=0.6, help="sdedit: 0..1")
    # editing always runs deterministic DDIM: no --sampler or --eta
    shared.add_sampling(ed, flags=("steps", "seed", "guidance", "guidance_rescale"), steps=50,
                        guidance=3.0, seed_help="seed of SDEdit's noise (default 0)")
    ed.add_argument("--out", default="edit.png",
                    help="the edited photo to write (PNG; the whole photo, the face pasted back)")
    ed.add_argument("--crops", help="the aligned before | after to write (default: OUT's name "
                                    "with -crops)")
    shared.add_face(ed)
    shared.add_device(ed)


def run(args: argparse.Namespace) -> int:
    import torch

    from facediff.data.conditions import UNSPECIFIED
    from facediff.data.transforms import array_to_image, model_to_uint8
    from facediff.diffusion.editing import crop_tensor, edit_photo, edit_settings, load_face
    from facediff.faces import paste_back
    from facediff.viz.grid import make_grid

    if not args.attr and args.method != "sdedit":  # SDEdit alone re-draws the face
        raise FacediffError("give at least one --attr NAME=VALUE to change (or --method "
                            "sdedit --strength S to re-draw the face, with any model)")
    if not 0.0 < args.strength <= 1.0:  # NaN fails this too
        raise FacediffError(f"--strength must be in (0, 1], got {args.strength}")
    out = shared.writable_file(args.out)
    crops = shared.writable_file(args.crops or out.with_name(f"{out.stem}-crops.png"),
                                 "--crops")
    from facediff.api import load_editor

    distilled = shared.load_model(args, conditional=True)
    model = load_editor(distilled)  # a few-step student cannot invert: its teacher edits
    if model is not distilled:
        log.info("editing with %s, the teacher of the distilled %s", model.source,
                 distilled.source)
    settings = edit_settings(model, shared.sampling_settings(args))
    photo, aligned = load_face(args.photo, model, align=args.align, face=args.face,
                               detector=args.detector)
    if aligned.index:
        log.info("editing face %d of %s (eyes %.0f px apart)", aligned.index, args.photo,
                 aligned.face.eye_distance)
    x = crop_tensor(aligned.image, model).to(model.device)
    src = model.labels(args.from_attr)
    dst = src.clone()
    changes = model.labels(args.attr)
    changed = changes != UNSPECIFIED
    dst[changed] = changes[changed]
    after = edit_photo(model, x, src, dst, method=args.method, strength=args.strength,
                       settings=settings)
    before = model_to_uint8(x.cpu())[0]
    edited, _ = paste_back(photo, aligned, array_to_image(after.numpy()))
    save_png(edited, out)
    save_png(make_grid(torch.stack([before, after]), nrow=2), crops)
    print(f"wrote {out} (the photo, edited: {' '.join(args.attr) or 're-drawn'}, {args.method}, "
          f"{settings.steps} steps, guidance {settings.guidance}) and {crops} (before | after)")
    return 0


def save_png(img: Image.Image, path: Path) -> None:
    """Write a PNG whole or not at all (a temp file renamed into place)."""
    from facediff.atomic import write_with

    write_with(path, lambda f: img.save(f, format="PNG"))
