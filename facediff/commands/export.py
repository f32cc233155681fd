"""``facediff export``: write a run's EMA weights as a model dir."""

from __future__ import annotations

import argparse

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands

NAME = "export"


def add_parser(commands: Commands) -> None:
    e = commands.add(NAME, "export a run's EMA weights as a model dir")
    e.add_argument("run", help="run dir")
    e.add_argument("--out", required=True, help="output model dir")
    e.add_argument("--half", action="store_true", help="store weights in float16")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from facediff.api import load

    shared.writable_dir(Path(args.out).expanduser().parent, "the folder of --out")
    model = load(args.run, device="cpu")
    out = model.save(args.out, half=args.half)
    print(f"exported {model.source} to {out}")
    return 0
