"""The ``facediff`` command: the list of commands (facediff.commands, one module each).

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from facediff import __version__
from facediff.allocator import tune_allocator
from facediff.commands import (
    app,
    autoencoder,
    card,
    classifier,
    config,
    data,
    distill,
    edit,
    evaluate,
    export,
    interpolate,
    models,
    push,
    sample,
    train,
    viz,
)
from facediff.commands.arguments import Commands, Parser
from facediff.errors import FacediffError

# in the order `facediff --help` lists them
COMMANDS = [train, autoencoder, distill, sample, interpolate, edit, models, config, export, card,
            push, data, evaluate, classifier, viz, app]


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


def build_parser() -> argparse.ArgumentParser:
    """The parser: each command adds its own sub-parser."""
    p = Parser(prog="facediff", description="Train, sample and inspect face diffusion models.")
    p.add_argument("--version", action="version", version=f"facediff {__version__}")
    common = Parser(add_help=False)  # every command takes these
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = Commands(p, "command", common)
    for command in COMMANDS:
        command.add_parser(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    tune_allocator()
    run = {c.NAME: c.run for c in COMMANDS}[args.command]
    try:
        return run(args)
    except FacediffError as e:
        print(f"facediff: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a write that failed late (a full disk while saving images)
        where = f": {e.filename}" if e.filename else ""
        print(f"facediff: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facediff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
