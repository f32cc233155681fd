"""``facediff train``: train a model, or resume the run in ``--out``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.config import Config

if TYPE_CHECKING:
    from facediff.model.autoencoder import FirstStage
    from facediff.train.trainer import TrainResult

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
    add_run_arguments(p)
    p.add_argument("--autoencoder", metavar="DIR",
                   help="train a latent diffusion model on this autoencoder's latents (a "
                        "`facediff autoencoder train` run or export); a resumed run keeps "
                        "its own copy")
    p.add_argument("--init", metavar="MODEL",
                   help="start a new run from this model's weights (an export, a run dir or "
                        "a bundled name): to train a model on in a new run dir, or fine-tune "
                        "it; with no --preset/--config the run takes the model's config. A "
                        "resumed run ignores it")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What every training command takes: data, run dir, config, limits, progress."""
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
    cfg = run_config(args, run_dir)
    first_stage = None
    if args.autoencoder:
        first_stage = with_autoencoder(cfg, args.autoencoder)
    result = train(cfg, run_dir, progress=not args.no_progress, time_limit_min=args.time_limit,
                   autoencoder=first_stage)
    return report(result, args, run_dir)


def report(result: TrainResult, args: argparse.Namespace, run_dir: Path) -> int:
    """Say how the run ended; the exit code (2: diverged, 130: interrupted)."""
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


def with_autoencoder(cfg: Config, path: str) -> FirstStage:
    """Load the autoencoder at ``path`` for a latent run of ``cfg`` and make the config
    describe it (kind, widths, blocks and latent channels come from the autoencoder). A
    config that names an autoencoder (a latent preset) must get latents of the shape its
    U-Net expects (channels and factor); a pixel config takes the autoencoder's. Mismatches
    are one line (exit 2)."""
    from facediff.config import latent_factor, sample_shape
    from facediff.configure import resolve_config
    from facediff.errors import ConfigError
    from facediff.model.autoencoder import load_autoencoder

    first, ae_cfg, _ = load_autoencoder(path)
    if ae_cfg.data.channels != cfg.data.channels:
        raise ConfigError(f"the autoencoder {path} takes {ae_cfg.data.channels}-channel "
                          f"images; this model's data has {cfg.data.channels}")
    a, b = cfg.autoencoder, ae_cfg.autoencoder
    if a.kind != "none" and (a.latent_channels, latent_factor(cfg)) != \
            (b.latent_channels, latent_factor(ae_cfg)):
        c, h, w = sample_shape(cfg)
        raise ConfigError(
            f"the autoencoder {path} makes {b.latent_channels}-channel latents at 1/"
            f"{latent_factor(ae_cfg)} of the image size; this model's U-Net expects "
            f"{c}x{h}x{w} latents of {cfg.data.image_size} px images ({a.latent_channels} "
            f"channels, factor {latent_factor(cfg)}): use a matching autoencoder or preset")
    a.kind, a.block_out_channels = b.kind, list(b.block_out_channels)
    a.blocks_per_level, a.latent_channels = b.blocks_per_level, b.latent_channels
    checked = resolve_config(base=cfg)  # e.g. the U-Net's levels against the latent size
    cfg.autoencoder = checked.autoencoder
    return first


def run_config(args: argparse.Namespace, run_dir: Path) -> Config:
    """The run's saved config (resuming) or a new one, with the command's changes."""
    from facediff.configure import resolve_config

    data_path = str(Path(args.data).expanduser().resolve()) if args.data else None
    overrides = list(args.overrides)
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    init = getattr(args, "init", None)
    saved = run_dir / "config.yaml"
    if init and saved.is_file():
        from facediff.train.checkpoint import list_checkpoints

        if list_checkpoints(run_dir):
            log.warning("resuming %s from its checkpoints; --init ignored", run_dir)
            init = None
    if init:
        from facediff.assets import resolve_model

        resolve_model(init)  # a missing model: one line now, before the data loads
        if Path(init).expanduser().exists():  # a path (not a bundled name), made absolute
            init = str(Path(init).expanduser().resolve())
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
        if init and not (args.preset or args.config):
            cfg = resolve_config(base=init_config(init), overrides=overrides)
        else:
            cfg = resolve_config(preset=args.preset if not args.config else None,
                                 config_file=args.config, overrides=overrides)
        if data_path:  # a path is taken as it is, never parsed as YAML
            cfg.data.path = data_path
        if args.labels:
            cfg.data.labels = str(Path(args.labels).expanduser().resolve())
    if init:  # a new run, or one stopped before its first checkpoint
        cfg.train.init = init
    if cfg.data.path:
        cfg.data.path = str(Path(cfg.data.path).expanduser())
    return cfg


def init_config(model: str) -> Config:
    """The config of the model a new run starts from (``--init`` with no preset), ready to
    train on: its conditions kept (the data must give the same), its record of what it
    started from and how far it trained cleared (the trainer fills them in anew)."""
    from facediff.train.checkpoint import read_model

    cfg, _, _ = read_model(model)
    if cfg.conditions and cfg.data.conditions is None:
        cfg.data.conditions = [c.name for c in cfg.conditions]
    cfg.train.forget_init()  # run_config sets train.init to the model itself
    return cfg
