"""The ``facediff`` command: parse, call the library, print, exit.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from facediff import __version__
from facediff.errors import FacediffError

log = logging.getLogger("facediff")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger("facediff")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _positive(kind: str, number: type = int):
    """argparse type: a positive int (at least 1) or, with ``number=float``, a finite float > 0."""
    what = "an integer" if number is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be {what}, got {text!r}") from None
        if number is int and value < 1:
            raise argparse.ArgumentTypeError(f"{kind} must be at least 1, got {value}")
        if number is not int and not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{kind} must be a positive number, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from facediff.assets import MODEL_HELP

    p = _Parser(prog="facediff", description="Train, sample and inspect face diffusion models.")
    p.add_argument("--version", action="version", version=f"facediff {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help: str) -> argparse.ArgumentParser:  # every command takes -q
        return sub.add_parser(name, parents=[common], help=help)

    t = add("train", "train a model (or resume the run in --out)")
    t.add_argument("--data", help="image folder (recursive; jpg/png/webp/bmp)")
    t.add_argument("--labels", help="labels file (CSV/TSV/JSON) for an image folder")
    t.add_argument("--out", required=True, help="run dir; an existing run is resumed")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--preset", help="preset name (see `facediff config --list`)")
    src.add_argument("--config", help="YAML config file")
    t.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config value, e.g. train.lr=2e-4")
    t.add_argument("--max-steps", type=_positive("--max-steps"),
                   help="shortcut for --set train.max_steps=N")
    t.add_argument("--time-limit", type=_positive("--time-limit", float), metavar="MINUTES",
                   help="stop after this many minutes of training (checkpoint and export "
                        "first); the same command resumes")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = add("sample", "generate images from a trained model")
    s.add_argument("model", nargs="?", help=MODEL_HELP + " or --attr-grid")
    s.add_argument("--n", type=_positive("--n"), default=16, help="number of images")
    s.add_argument("--out", default="samples", help="output folder (default: samples)")
    s.add_argument("--sampler", help="ddpm, ddim, dpmpp, unipc, euler or heun")
    s.add_argument("--steps", type=_positive("--steps"), help="sampling steps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=_positive("--batch-size"), default=16)
    s.add_argument("--eta", type=float, help="DDIM eta (0 deterministic, 1 ancestral)")
    s.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="fix an attribute (conditional models), e.g. Smiling=1, race=Asian")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 3)")
    s.add_argument("--guidance-rescale", type=float, help="0..1 (Lin et al. 2023)")
    s.add_argument("--attr-grid", metavar="NAMES",
                   help="write attr_grid.png: per attribute (comma-separated, or 'all') a row "
                        "off and a row on, one column per seed (--n seeds)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    s.add_argument("--no-grid", action="store_true", help="do not write grid.png")
    s.add_argument("--no-progress", action="store_true")

    it = add("interpolate", "interpolate between seeds or along an attribute")
    it.add_argument("model", nargs="?", help=MODEL_HELP + " or --sweep")
    it.add_argument("--seeds", default="0,1", help="two seeds to interpolate between (A,B)")
    it.add_argument("--sweep", metavar="NAME",
                    help="instead: fix the noise and sweep this attribute from off to on")
    it.add_argument("--from", dest="value_from", help="--sweep: start value (default off)")
    it.add_argument("--to", dest="value_to", help="--sweep: end value (default on)")
    it.add_argument("--rows", type=_positive("--rows"), default=4,
                    help="--sweep: one row per seed, from --seed")
    it.add_argument("--seed", type=int, default=0)
    it.add_argument("--frames", type=_positive("--frames"), default=8)
    it.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                    help="attributes held fixed (conditional models)")
    it.add_argument("--guidance", type=float)
    it.add_argument("--sampler")
    it.add_argument("--steps", type=_positive("--steps"))
    it.add_argument("--out", default="interpolation.png", help="grid PNG to write")
    it.add_argument("--device", default="auto")

    ed = add("edit", "edit attributes of a real face photo")
    ed.add_argument("photo", help="a face photo (centre-cropped and resized to the model)")
    ed.add_argument("--model", help="a conditional model: dir or bundled name (default: "
                                     "the bundled attribute model)")
    ed.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                    help="attributes to set, e.g. Eyeglasses=1")
    ed.add_argument("--from-attr", action="append", default=[], metavar="NAME=VALUE",
                    help="the photo's own attributes (default: unspecified)")
    ed.add_argument("--method", choices=["ddim", "sdedit"], default="ddim",
                    help="ddim: invert then regenerate; sdedit: noise to --strength, denoise")
    ed.add_argument("--strength", type=float, default=0.6, help="sdedit: 0..1")
    ed.add_argument("--steps", type=_positive("--steps"), default=50)
    ed.add_argument("--guidance", type=float, default=3.0)
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--out", default="edit.png", help="before | after PNG to write")
    ed.add_argument("--device", default="auto")

    add("models", "list the bundled pretrained models (usable by name, or by default)")

    c = add("config", "print a resolved config as YAML, or list presets")
    c.add_argument("--list", action="store_true", help="list the presets")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--preset")
    src.add_argument("--config")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    e = add("export", "export a run's EMA weights as a model dir")
    e.add_argument("run", help="run dir")
    e.add_argument("--out", required=True, help="output model dir")
    e.add_argument("--half", action="store_true", help="store weights in float16")

    d = add("data", "dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    syn = dsub.add_parser("synth", parents=[common],
                          help="draw a folder of cartoon faces (no download needed)")
    syn.add_argument("--out", required=True)
    syn.add_argument("--n", type=_positive("--n"), default=512)
    syn.add_argument("--size", type=_positive("--size"), default=64)
    syn.add_argument("--seed", type=int, default=0)
    ins = dsub.add_parser("inspect", parents=[common],
                          help="summarise a dataset: source, sizes, labels; write a grid")
    ins.add_argument("path", help="image folder, CelebA dir, MNIST dir, HF dataset or name")
    ins.add_argument("--source", default="auto",
                     choices=["auto", "folder", "celeba", "hf", "utkface", "mnist"])
    ins.add_argument("--labels", help="labels file (CSV/TSV/JSON) for an image folder")
    ins.add_argument("--conditions", help="comma-separated label columns to use")
    ins.add_argument("--split", help="CelebA: train/val/test; HF: a split name")
    ins.add_argument("--size", type=_positive("--size"), default=64, help="grid image size")
    ins.add_argument("--grid", default="dataset_grid.png", help="grid PNG to write")
    ins.add_argument("--n", type=_positive("--n"), default=64, help="images in the grid")
    ins.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    ins.add_argument("--no-progress", action="store_true")

    from facediff.eval.commands import add_parsers

    add_parsers(add, _positive, common)
    from facediff.viz.commands import add_parsers as add_viz_parsers

    add_viz_parsers(add, _positive, common)

    from facediff.app.commands import add_parser as add_app

    add_app(add, _positive)
    return p


# ---- commands ---------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from facediff.config import Config, resolve_config
    from facediff.train.trainer import train

    run = Path(args.out)
    data_path = str(Path(args.data).expanduser().resolve()) if args.data else None
    overrides = list(args.overrides)
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    saved = run / "config.yaml"
    if saved.is_file():
        base = Config.load(saved)
        if args.preset or args.config:
            log.warning("resuming %s with its saved config; --preset/--config ignored "
                        "(use --set to change values)", run)
        if data_path and data_path != base.data.path:
            log.warning("data path changed from %s to %s", base.data.path, data_path)
            base.data.path = data_path
        cfg = resolve_config(base=base, overrides=overrides)
    else:
        cfg = resolve_config(preset=args.preset if not args.config else None,
                             config_file=args.config, overrides=overrides)
        if data_path:  # a path is taken as it is, never parsed as YAML
            cfg.data.path = data_path
        if args.labels:
            cfg.data.labels = str(Path(args.labels).expanduser().resolve())
    if cfg.data.path:
        cfg.data.path = str(Path(cfg.data.path).expanduser())
    result = train(cfg, run, progress=not args.no_progress, time_limit_min=args.time_limit)
    msg = {
        "finished": "finished",
        "early_stopped": "stopped early (validation loss stopped improving)",
        "interrupted": "interrupted; run the same command to resume",
        "paused": "paused; run the same command to resume",
        "time_limit": f"stopped at the {args.time_limit or 0:g}-minute time limit; run the "
                      "same command to resume",
    }[result.reason]
    loss = f", loss {result.last_loss:.4f}" if result.last_loss is not None else ""
    if result.main_process:
        print(f"{msg} at step {result.step}{loss}; model: {run / 'model'}")
    return 130 if result.reason == "interrupted" else 0


def _device(name: str) -> object:
    import torch

    from facediff.api import default_device

    try:
        device = default_device() if name == "auto" else torch.device(name)
    except RuntimeError:
        raise FacediffError(f"unknown --device {name!r} (auto, cpu, cuda, cuda:N, mps)")\
            from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise FacediffError(f"--device {name} requested but that CUDA device is not "
                            "available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FacediffError("--device mps requested but MPS is not available")
    return device


def cmd_sample(args: argparse.Namespace) -> int:
    from facediff.api import load
    from facediff.viz.grid import make_grid

    model = load(args.model, device=_device(args.device),
                 conditional=bool(args.attr or args.attr_grid))
    if args.attr_grid:
        from facediff.viz.attributes import attribute_grid

        names = None if args.attr_grid == "all" else [
            a.strip() for a in args.attr_grid.split(",") if a.strip()]
        grid = attribute_grid(model, names, n_seeds=args.n, seed=args.seed, steps=args.steps,
                              sampler=args.sampler, guidance=args.guidance,
                              base_attrs=args.attr, batch_size=args.batch_size,
                              progress=not args.no_progress)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        grid.save(out / "attr_grid.png")
        print(f"wrote {out / 'attr_grid.png'}")
        return 0
    imgs = model.sample_tensor(args.n, args.steps, args.sampler, seed=args.seed,
                               batch_size=args.batch_size, eta=args.eta,
                               progress=not args.no_progress, attrs=args.attr,
                               guidance=args.guidance, guidance_rescale=args.guidance_rescale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from facediff.data.transforms import array_to_image

    for i, arr in enumerate(imgs.numpy()):
        array_to_image(arr).save(out / f"sample_{i + 1:04d}.png")
    if not args.no_grid:
        make_grid(imgs).save(out / "grid.png")
    s = model.config.sample
    attrs = f", {' '.join(args.attr)} at guidance " \
        f"{s.guidance if args.guidance is None else args.guidance}" if args.attr else ""
    print(f"wrote {args.n} images{'' if args.no_grid else ' and grid.png'} to {out} "
          f"({args.sampler or s.sampler}, {args.steps or s.steps} steps, seed {args.seed}"
          f"{attrs}, model {model.source})")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from facediff.api import load
    from facediff.diffusion.editing import interpolate_attribute, interpolate_seeds
    from facediff.viz.grid import make_grid

    model = load(args.model, device=_device(args.device),
                 conditional=bool(args.sweep or args.attr))
    if args.sweep:
        imgs = interpolate_attribute(model, args.sweep, args.frames, args.seed, args.rows,
                                     args.value_from, args.value_to, args.steps, args.sampler,
                                     args.attr, args.guidance)
        what = f"{args.sweep} swept over {args.frames} frames for seeds {args.seed}.." \
            f"{args.seed + args.rows - 1}"
    else:
        try:
            a, b = (int(x) for x in args.seeds.split(","))
        except ValueError:
            raise FacediffError(f"--seeds must be two integers A,B, got {args.seeds!r}") \
                from None
        imgs = interpolate_seeds(model, a, b, args.frames, args.steps, args.sampler,
                                 args.attr, args.guidance)
        what = f"seed {a} to seed {b} in {args.frames} frames"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(imgs, nrow=args.frames).save(out)
    print(f"wrote {out} ({what})")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    import torch

    from facediff.api import load
    from facediff.diffusion.editing import edit_photo, load_photo
    from facediff.viz.grid import make_grid

    if not args.attr:
        raise FacediffError("give at least one --attr NAME=VALUE to change")
    model = load(args.model, device=_device(args.device), conditional=True)
    photo = load_photo(args.photo, model).to(model.device)
    src = model.labels(args.from_attr)
    dst = src.clone()
    changes = model.labels(args.attr)
    dst[changes >= 0] = changes[changes >= 0]
    after = edit_photo(model, photo, src, dst, args.method, args.steps, args.guidance,
                       args.strength, args.seed)
    from facediff.data.transforms import model_to_uint8

    before = model_to_uint8(photo.cpu())[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(torch.stack([before, after]), nrow=2).save(out)
    print(f"wrote {out} (before | after: {' '.join(args.attr)}, {args.method}, "
          f"{args.steps} steps, guidance {args.guidance})")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from facediff.config import preset_names, resolve_config

    if args.list:
        print("\n".join(preset_names()))
        return 0
    cfg = resolve_config(preset=args.preset, config_file=args.config, overrides=args.overrides)
    sys.stdout.write(cfg.to_yaml())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from facediff.assets import BUNDLED, describe

    print("\n".join(describe(b) for b in BUNDLED.values()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from facediff.api import load

    model = load(args.run, device="cpu")
    out = model.save(args.out, half=args.half)
    print(f"exported {model.source} to {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "inspect":
        from facediff.config import DataConfig
        from facediff.data.inspect import inspect_dataset

        cfg = DataConfig(
            path=args.path if not Path(args.path).expanduser().exists()
            else str(Path(args.path).expanduser().resolve()),
            source=args.source, labels=args.labels, split=args.split, image_size=args.size,
            conditions=[c.strip() for c in args.conditions.split(",") if c.strip()]
            if args.conditions else None, cache=not args.no_cache,
        )
        report = inspect_dataset(cfg, args.grid, n_grid=args.n, progress=not args.no_progress)
        print(report.text())
        return 0
    if args.data_command == "synth":
        from facediff.data.synthetic import make_faces

        make_faces(args.out, args.n, args.size, args.seed)
        print(f"wrote {args.n} synthetic faces ({args.size}x{args.size}) to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from facediff.eval.commands import cmd_eval as run

    return run(args)


def cmd_classifier(args: argparse.Namespace) -> int:
    from facediff.eval.commands import cmd_classifier as run

    return run(args)


def cmd_viz(args: argparse.Namespace) -> int:
    from facediff.viz.commands import cmd_viz as run

    return run(args)


def cmd_app(args: argparse.Namespace) -> int:
    from facediff.app.commands import cmd_app as run

    return run(args, _device(args.device))


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "interpolate": cmd_interpolate,
            "edit": cmd_edit, "models": cmd_models, "config": cmd_config, "export": cmd_export,
            "data": cmd_data, "eval": cmd_eval, "classifier": cmd_classifier, "viz": cmd_viz,
            "app": cmd_app}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return COMMANDS[args.command](args)
    except FacediffError as e:
        print(f"facediff: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("facediff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
