"""``facediff viz``: figures of the forward and reverse process and of training runs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from facediff.assets import MODEL_HELP
from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.config import DiffusionConfig
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from PIL import Image

    Frames = tuple[list[Image.Image], list[int]]

NAME = "viz"
log = logging.getLogger("facediff")


def _animation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--animation", choices=["gif", "mp4", "none"], default="gif",
                   help="also write an animation beside --out (default gif; mp4 needs "
                        "imageio-ffmpeg)")


def add_parser(commands: Commands) -> None:
    v = commands.add(NAME, "figures of the diffusion process and of training runs")
    sub = commands.nested(v, "viz_command")

    f = sub.add("forward", "the forward noising process on dataset images")
    f.add_argument("data", help="image folder, CelebA dir, MNIST dir, HF dataset or name")
    f.add_argument("--t", default="0,50,100,200,400,999",
                   help="comma-separated timesteps, one column each (default 0,50,100,200,400,999)")
    f.add_argument("-n", "--n", type=shared.positive("--n"), default=4,
                   help="images (rows; default 4)")
    f.add_argument("--size", type=shared.positive("--size"), help="image size (default 64)")
    f.add_argument("--schedule", help="beta schedule: cosine, linear, scaled_linear or "
                                      "sigmoid; comma-separated to compare (default: "
                                      f"{DiffusionConfig().beta_schedule}, as in the default "
                                      "config)")
    f.add_argument("--model", help="take the schedule and image size from this model instead")
    f.add_argument("--seed", type=int, default=0, help="picks the images and the noise")
    f.add_argument("--out", default="forward.png", help="figure PNG to write")
    _animation(f)
    shared.add_progress(f)

    r = sub.add("reverse", "the reverse (denoising) chain of a model: x_t and predicted x_0")
    r.add_argument("model", nargs="?", help=MODEL_HELP)
    r.add_argument("-n", "--n", type=shared.positive("--n"), default=2, help="images (default 2)")
    shared.add_sampling(r, sampler="ddim", steps=50)
    r.add_argument("--show", type=shared.positive("--show"), default=8,
                   help="steps shown in the figure, spread over the run (default 8)")
    shared.add_attr(r, "fix an attribute (conditional models), e.g. Smiling=1")
    shared.add_device(r)
    r.add_argument("--out", default="reverse.png", help="figure PNG to write")
    _animation(r)

    p = sub.add("progress", "a run's fixed-noise sample grids over training")
    p.add_argument("run", help="run dir (with samples/step-*.png)")
    p.add_argument("--max-frames", type=shared.positive("--max-frames"), default=8,
                   help="grids in the figure, evenly spread (default 8)")
    p.add_argument("--out", default="progress.png", help="figure PNG to write")
    _animation(p)

    lo = sub.add("loss", "a run's loss, learning rate and FID")
    lo.add_argument("run", help="run dir (with logs/metrics.csv)")
    lo.add_argument("--smooth", type=float, default=0.9,
                    help="smoothing of the training loss, 0 (none) to <1, like TensorBoard's "
                         "slider but centred (default 0.9)")
    lo.add_argument("--out", default="loss.png", help="figure PNG to write")


def run(args: argparse.Namespace) -> int:
    from facediff.viz.animation import animation_path, check_format, save_animation

    fmt = getattr(args, "animation", "none")
    check_format(fmt)  # before any work
    out = shared.writable_file(args.out)
    frames: Frames | None = None
    if args.viz_command == "forward":
        frames, what = _forward(args, fmt != "none")
    elif args.viz_command == "reverse":
        frames, what = _reverse(args, fmt != "none")
    elif args.viz_command == "progress":
        from facediff.viz.training import progress_figure, progress_frames

        progress_figure(args.run, out, args.max_frames)
        frames = progress_frames(args.run) if fmt != "none" else None
        what = f"sample grids of {args.run}"
    else:
        from facediff.viz.training import loss_figure

        loss_figure(args.run, out, args.smooth)
        what = f"training curves of {args.run}"
    wrote = str(out)
    if frames is not None:
        anim = save_animation(frames[0], animation_path(out, fmt), frames[1])
        wrote += f" and {anim} ({len(frames[0])} frames)"
    print(f"wrote {wrote}: {what}")
    return 0


def _forward(args: argparse.Namespace, animate: bool) -> tuple[Frames | None, str]:
    from facediff.config import DataConfig
    from facediff.viz.process import (
        forward_figure,
        forward_frames,
        load_faces,
        parse_timesteps,
        schedule_configs,
    )

    if args.model:
        if args.schedule or args.size:
            raise FacediffError("--model sets the schedule and image size: drop --schedule "
                                "and --size, or --model")
        from facediff.train.checkpoint import read_model

        cfg = read_model(args.model)[0]
        schedules = {cfg.diffusion.beta_schedule: cfg.diffusion}
        size = cfg.data.image_size
    else:
        default = DiffusionConfig()
        schedules = schedule_configs(args.schedule or default.beta_schedule, default)
        size = args.size or 64
    T = next(iter(schedules.values())).num_train_timesteps
    ts = parse_timesteps(args.t, T)  # before loading any data
    path = Path(args.data).expanduser()
    data = DataConfig(path=str(path.resolve()) if path.exists() else args.data,
                      image_size=size, hflip=False)
    images = load_faces(data, args.n, args.seed, progress=not args.no_progress)
    forward_figure(images, ts, schedules, args.out, seed=args.seed)
    frames = forward_frames(images, schedules, seed=args.seed) if animate else None
    return frames, (f"{len(images)} images of {args.data} at t = {','.join(map(str, ts))} "
                    f"({', '.join(schedules)}, seed {args.seed})")


def _reverse(args: argparse.Namespace, animate: bool) -> tuple[Frames | None, str]:
    from facediff.viz.process import capture_chain, reverse_figure, reverse_frames

    settings = shared.sampling_settings(args)  # an unknown sampler: before loading the model
    model = shared.load_model(args, conditional=bool(args.attr))
    chain = capture_chain(model, args.n, settings=settings, attrs=args.attr)
    reverse_figure(chain, args.out, args.show)
    frames = reverse_frames(chain) if animate else None
    return frames, f"{chain.title()}, model {model.source}"
