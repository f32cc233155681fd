"""``facediff models``: list the bundled models."""

from __future__ import annotations

import argparse

from facediff.commands.arguments import Commands

NAME = "models"


def add_parser(commands: Commands) -> None:
    commands.add(NAME, "list the bundled pretrained models (usable by name, or by default)")


def run(args: argparse.Namespace) -> int:
    from facediff.assets import BUNDLED, describe

    print("\n".join(describe(b) for b in BUNDLED.values()))
    return 0
