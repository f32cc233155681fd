"""``facediff distill``: a few-step DDIM student of a trained model (progressive distillation),
or resume the distillation in ``--out``.

    facediff distill runs/celeba --steps 4 --out runs/celeba-4step
    facediff sample runs/celeba-4step --n 64        # DDIM, 4 steps: the model's own default
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from facediff.commands import arguments as shared
from facediff.commands import train as train_command
from facediff.commands.arguments import Commands
from facediff.errors import FacediffError

NAME = "distill"
DEFAULT_START = 16  # distill.start_steps's default, for the help


def power_of_two(kind: str) -> Callable[[str], int]:
    """argparse type: 1, 2, 4, 8, ..."""
    whole = shared.positive(kind)

    def parse(text: str) -> int:
        value = int(whole(text))
        if value & (value - 1):
            raise argparse.ArgumentTypeError(f"{kind} must be a power of two (1, 2, 4, 8, "
                                             f"...), got {value}")
        return value

    return parse


def add_parser(commands: Commands) -> None:
    p = commands.add(NAME, "distil a model into a few-step DDIM sampler (progressive "
                           "distillation; resumes the run in --out)")
    p.add_argument("model", help="the teacher: a run dir, an exported model or a bundled "
                                 "model's name")
    p.add_argument("--steps", type=power_of_two("--steps"), required=True,
                   help="the student's DDIM steps: 1, 2, 4, ... below --start-steps")
    p.add_argument("--out", required=True, help="run dir; an existing distillation is resumed")
    p.add_argument("--data", help="the images to distil on (default: the teacher's "
                                  "training data, its config's data.path)")
    p.add_argument("--start-steps", type=power_of_two("--start-steps"),
                   help=f"the teacher's DDIM steps, halved each round (default "
                        f"{DEFAULT_START}; a resumed run keeps its own)")
    rounds = p.add_mutually_exclusive_group()
    rounds.add_argument("--steps-per-round", type=shared.positive("--steps-per-round"),
                        metavar="K", help="optimizer steps per halving (default 2000)")
    rounds.add_argument("--max-steps", type=shared.positive("--max-steps"),
                        help="optimizer steps of all rounds together (a multiple of the "
                             "number of rounds)")
    p.add_argument("--time-limit", type=shared.positive("--time-limit", float),
                   metavar="MINUTES", help="stop after this many minutes (checkpoint and "
                                           "export first); the same command resumes")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config value, e.g. train.lr=1e-4 or "
                                             "distill.guidance=3")
    shared.add_progress(p)


def run(args: argparse.Namespace) -> int:
    from facediff.config import Config, distill_rounds
    from facediff.train.distill import distill, distill_config, load_teacher

    run_dir = shared.writable_dir(args.out, create=False)
    saved = Config.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() \
        else None
    teacher_cfg, weights, digest = load_teacher(args.model)
    start = args.start_steps or (saved.distill.start_steps if saved else DEFAULT_START)
    if args.steps >= start:
        raise FacediffError(f"--steps {args.steps} must be below --start-steps {start}: each "
                            "round halves the teacher's steps")
    per_round = args.steps_per_round
    if args.max_steps:
        rounds = (start // args.steps).bit_length() - 1
        if args.max_steps % rounds:
            raise FacediffError(f"--max-steps {args.max_steps} must be a multiple of the "
                                f"{rounds} rounds from {start} to {args.steps} steps")
        per_round = args.max_steps // rounds
    model = Path(args.model).expanduser()
    cfg = distill_config(
        teacher_cfg, digest=digest, steps=args.steps, start_steps=start,
        steps_per_round=per_round, saved=saved,
        teacher_name=str(model.resolve()) if model.exists() else args.model,
        data_path=str(Path(args.data).expanduser().resolve()) if args.data else None,
        overrides=args.overrides)
    result = distill(cfg, run_dir, teacher=weights, progress=not args.no_progress,
                     time_limit_min=args.time_limit)
    code = train_command.report(result, args, run_dir)
    if result.main_process and result.reason == "finished":
        d = cfg.distill
        r = distill_rounds(d)
        print(f"distilled {d.start_steps} -> {d.steps} DDIM steps in {r} round"
              f"{'s' * (r != 1)}; sample it with: facediff sample {run_dir} --n 16")
    return code
