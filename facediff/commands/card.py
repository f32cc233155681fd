"""``facediff card``: write a model's Hugging Face model card (README.md) locally, the same
card ``facediff push`` uploads: from its config, its run's logs and the given scores."""

from __future__ import annotations

import argparse
import re

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands

NAME = "card"
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def license_id(text: str) -> str:
    """argparse type: a Hub licence identifier (``cc-by-nc-4.0``, ``mit``, ``other``)."""
    if not _LICENSE.match(text):
        raise argparse.ArgumentTypeError(
            f"--license takes a Hugging Face licence id in lower case (e.g. cc-by-nc-4.0, mit, "
            f"other), got {text!r}")
    return text


def add_card_options(p: argparse.ArgumentParser) -> None:
    """The options ``card`` and ``push`` share: what goes into the card."""
    p.add_argument("--scores", action="append", default=[], metavar="[LABEL=]FILE",
                   help="measured scores for the card's Evaluation table (repeatable): "
                        "facediff eval's DIR/results.json (LABEL: what they were measured "
                        "against; default DIR's name) or bench/release_eval.py's summary.json")
    p.add_argument("--license", type=license_id, metavar="ID",
                   help="the Hub licence field (default: the training data's, e.g. other + "
                        "CelebA's non-commercial terms; plain other for data facediff does "
                        "not know)")
    p.add_argument("--half", action="store_true",
                   help="store the weights in float16 (half the download; default float32, "
                        "the weights exactly as trained and scored)")


def add_parser(commands: Commands) -> None:
    c = commands.add(NAME, "write a model's Hugging Face model card (README.md) locally")
    c.add_argument("model", help="run dir, model dir or bundled model name")
    c.add_argument("--out", metavar="FILE", help="write the card here (default: print it)")
    c.add_argument("--repo", metavar="OWNER/NAME",
                   help="the Hub repo the card's calls name (default: user/name)")
    add_card_options(c)


def run(args: argparse.Namespace) -> int:
    import sys

    from facediff.atomic import write_text
    from facediff.hub.card import load_card_inputs, model_card, pipeline_index
    from facediff.hub.push import check_repo_id

    repo = check_repo_id(args.repo) if args.repo else None
    out = shared.writable_file(args.out, "--out") if args.out else None
    model, inputs = load_card_inputs(args.model, repo=repo, scores=args.scores,
                                     license=args.license, half=args.half)
    text = model_card(model, inputs, pipeline_index(model))
    if out is None:
        sys.stdout.write(text)
        return 0
    write_text(out, text)
    print(f"wrote the model card of {model.source} to {out}")
    return 0
