"""``facediff train``: train a model, or resume the run in ``--out``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.config import Config

NAME = "train"
log = logging.getLogger("facediff")

_DONE = {
    "finished": "finished",
    "early_stopped": "stopped early (validation loss stopped improving)",
    "interrupted": "interrupted; run the same command to resume",
    "paused": "paused; run the same command to resume",
    "time_limit": "stopped at the {limit:g}-minute time limit; run the same command to resume",
}


def add_parser(commands: Commands) -> None:
    p = commands.add(NAME, "train a model (or resume the run in --out)")
    p.add_argument("--data", help="image folder (recursive; jpg/png/webp/bmp)")
    p.add_argument("--labels", help="labels file (CSV/TSV/JSON) for an image folder")
    p.add_argument("--out", required=True, help="run dir; an existing run is resumed")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="preset name (see `facediff config --list`)")
    src.add_argument("--config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config value, e.g. train.lr=2e-4")
    p.add_argument("--max-steps", type=shared.positive("--max-steps"),
                   help="shortcut for --set train.max_steps=N")
    p.add_argument("--time-limit", type=shared.positive("--time-limit", float), metavar="MINUTES",
                   help="stop after this many minutes of training (checkpoint and export "
                        "first); the same command resumes")
    shared.add_progress(p)


def run(args: argparse.Namespace) -> int:
    from facediff.train.trainer import train

    run_dir = shared.writable_dir(args.out, create=False)
    cfg = _config(args, run_dir)
    result = train(cfg, run_dir, progress=not args.no_progress, time_limit_min=args.time_limit)
    if result.reason == "diverged":
        if result.main_process:
            print(f"facediff: error: {result.message}", file=sys.stderr)
        return 2
    msg = _DONE[result.reason].format(limit=args.time_limit or 0)
    loss = f", loss {result.last_loss:.4f}" if result.last_loss is not None else ""
    if result.skipped_steps:
        loss += f", {result.skipped_steps} steps skipped (NaN or inf)"
    if result.main_process:
        print(f"{msg} at step {result.step}{loss}; model: {run_dir / 'model'}")
    return 130 if result.reason == "interrupted" else 0


def _config(args: argparse.Namespace, run_dir: Path) -> Config:
    """The run's saved config (resuming) or a new one, with the command's changes."""
    from facediff.configure import resolve_config

    data_path = str(Path(args.data).expanduser().resolve()) if args.data else None
    overrides = list(args.overrides)
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    saved = run_dir / "config.yaml"
    if saved.is_file():
        base = Config.load(saved)
        if args.preset or args.config:
            log.warning("resuming %s with its saved config; --preset/--config ignored "
                        "(use --set to change values)", run_dir)
        if base.conditions and base.data.conditions is None:
            # resume with the conditions it was trained with, whatever the labels-file rules
            # that pick conditions say now
            base.data.conditions = [c.name for c in base.conditions]
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
    return cfg
