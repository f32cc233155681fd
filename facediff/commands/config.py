"""``facediff config``: print a resolved config as YAML, or list the presets."""

from __future__ import annotations

import argparse
import sys

from facediff.commands.arguments import Commands

NAME = "config"


def add_parser(commands: Commands) -> None:
    c = commands.add(NAME, "print a resolved config as YAML, or list presets")
    c.add_argument("--list", action="store_true", help="list the presets")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--preset")
    src.add_argument("--config")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    from facediff.config import preset_names
    from facediff.configure import resolve_config

    if args.list:
        print("\n".join(preset_names()))
        return 0
    cfg = resolve_config(preset=args.preset, config_file=args.config, overrides=args.overrides)
    sys.stdout.write(cfg.to_yaml())
    return 0
