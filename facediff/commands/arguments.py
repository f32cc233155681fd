"""Argument types and groups that several commands share, each defined once: the parser that
prints one-line errors, positive numbers, number lists, ``--device``, ``--attr``, loading the
model a command names, and the sampling group (its help built from the sampler registry)."""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from facediff.config import PRECISIONS
from facediff.diffusion.samplers import SAMPLERS, SamplingSettings, sampler_names, unknown_sampler
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.distributed import Shard

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
SAMPLING_FLAGS = ("sampler", "steps", "seed", "eta", "guidance", "guidance_rescale")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


class Commands:
    """Where commands add their parsers: each takes the options every command has (-q)."""

    def __init__(self, parser: argparse.ArgumentParser, dest: str,
                 common: argparse.ArgumentParser) -> None:
        self.common = common
        self._sub = parser.add_subparsers(dest=dest, required=True, parser_class=Parser)

    def add(self, name: str, help: str) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, parents=[self.common], help=help)

    def nested(self, parser: argparse.ArgumentParser, dest: str) -> Commands:
        """Sub-commands of a command (``facediff data synth``)."""
        return Commands(parser, dest, self.common)


def positive(kind: str, number: type = int) -> Callable[[str], int | float]:
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


def number_list(cast: Callable[[str], float], minimum: float,
                example: str) -> Callable[[str], list]:
    """argparse type: comma-separated numbers like 5,10,20, each at least ``minimum``."""
    def parse(text: str) -> list:
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers like {example}, got {text!r}") from None
        if not values or not all(math.isfinite(v) for v in values) or min(values) < minimum:
            raise argparse.ArgumentTypeError(
                f"expected numbers of at least {minimum:g} like {example}, got {text!r}")
        return values

    return parse


def names(text: str) -> list[str]:
    """argparse type: comma-separated names."""
    return [v.strip() for v in text.split(",") if v.strip()]


def writable_dir(path: str | Path, what: str = "--out", *, create: bool = True) -> Path:
    """A folder the command will write into, checked before any work: a file can be written
    in it (a read-only place, a file in the way, no permission: one line). ``create``: make
    it now; else only its nearest existing folder is checked (nothing is left behind by a
    command that then fails)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise FacediffError(f"{what} {p} is a file, not a folder")
    probe = p
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise FacediffError(f"cannot create {what} {p}: {probe} is a file")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise FacediffError(f"cannot write to {what} {p}: {e.strerror or e}") from None
    return p


def writable_file(path: str | Path, what: str = "--out") -> Path:
    """A file the command will write, checked before any work: not a folder, and its folder
    writable (see ``writable_dir``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise FacediffError(f"{what} {p} is a folder; name a file (e.g. {p / 'out.png'})")
    writable_dir(p.parent, f"the folder of {what}")
    return p


def add_attr(p: argparse.ArgumentParser,
             help: str = "fix an attribute (conditional models), e.g. Smiling=1") -> None:
    """``--attr NAME=VALUE``, repeatable."""
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE", help=help)


def add_face(p: argparse.ArgumentParser) -> None:
    """``--no-align``, ``--face K`` and ``--detector``: how a photo's face is found."""
    p.add_argument("--no-align", dest="align", action="store_false",
                   help="use the photo's centre crop instead of finding and aligning the face")
    p.add_argument("--face", type=positive("--face"), metavar="K",
                   help="which face of a photo with several, numbered from 1 left to right "
                        "(default: the largest)")
    p.add_argument("--detector", default="auto", choices=("auto", "yuface", "dlib"),
                   help="face detector (default auto: yuface, else dlib; the faces extra)")


def add_device(p: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """``--device`` and (``precision``) ``--precision`` for the network's arithmetic."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    if precision:
        p.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="the network's arithmetic: auto (bf16 on GPUs and on CPUs with "
                            "native bf16, else fp32), fp32, bf16 or fp16 (default auto)")


def load_model(args: argparse.Namespace, *, conditional: bool = False,
               shard: Shard | None = None) -> FaceModel:
    """The model ``args.model`` names (a path or a bundled name; None: the bundled face
    model, or with ``conditional`` the attribute model) on ``args.device`` (with a
    ``shard`` of several processes: ``auto`` is the process's own device) in
    ``args.precision``."""
    from facediff.api import load
    from facediff.device import resolve_device
    from facediff.distributed import Shard, device_for

    device = device_for(args.device, shard or Shard(), resolve_device)
    return load(args.model, device=device, conditional=conditional,
                precision=getattr(args, "precision", "auto"))


def add_progress(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--no-progress", action="store_true", help=help or "no progress bar")


def add_sampling(
    p: argparse.ArgumentParser, *, flags: Sequence[str] = SAMPLING_FLAGS,
    sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
    batch_size: int | None = None,
    seed_help: str = "image i uses seed + i, whatever the batch size (default 0)",
) -> None:
    """The sampling options (those in ``flags``). A default left None is the model's own
    (its ``config.sample``); ``batch_size`` adds ``--batch-size`` with that default."""
    g = p.add_argument_group("sampling")
    model_default = "default: the model's"
    if "sampler" in flags:
        g.add_argument("--sampler", default=sampler,
                       help=f"{sampler_names()} "
                            f"({f'default {sampler}' if sampler else model_default})")
    if "steps" in flags:
        g.add_argument("--steps", type=positive("--steps"), default=steps,
                       help=f"sampling steps ({f'default {steps}' if steps else model_default})")
    if "seed" in flags:
        g.add_argument("--seed", type=int, default=0, help=seed_help)
    if "eta" in flags:
        g.add_argument("--eta", type=float, help="DDIM eta (0 deterministic, 1 ancestral)")
    if "guidance" in flags:
        shown = f"default {guidance:g}" if guidance is not None else model_default
        g.add_argument("--guidance", type=float, default=guidance,
                       help=f"classifier-free guidance scale, conditional models ({shown})")
    if "guidance_rescale" in flags:
        g.add_argument("--guidance-rescale", type=float, help="0..1 (Lin et al. 2023)")
    if batch_size is not None:
        g.add_argument("--batch-size", type=positive("--batch-size"), default=batch_size,
                       help=f"images per network batch (default {batch_size})")


def check_sampler(name: str | None) -> None:
    """An unknown sampler name is an error before any model is loaded."""
    if name and name not in SAMPLERS:  # empty: the model's own, as before
        raise FacediffError(unknown_sampler(name))


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    """The settings the sampling options ask for (None: the model's default)."""
    check_sampler(getattr(args, "sampler", None))
    fields = {f: getattr(args, f, None) for f in SAMPLING_FLAGS}
    fields["sampler"] = fields["sampler"] or None
    if getattr(args, "batch_size", None) is not None:
        fields["batch_size"] = args.batch_size
    if fields["seed"] is None:
        fields["seed"] = 0
    return SamplingSettings(**fields)
