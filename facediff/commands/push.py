"""``facediff push``: upload a model to the Hugging Face Hub in both formats (a diffusers
pipeline at the repo's root, facediff's own export in ``facediff/``) with its model card."""

from __future__ import annotations

import argparse

from facediff.commands.arguments import Commands
from facediff.commands.card import add_card_options

NAME = "push"


def add_parser(commands: Commands) -> None:
    p = commands.add(NAME, "upload a model to the Hugging Face Hub with its model card")
    p.add_argument("model", help="run dir, model dir or bundled model name")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME",
                   help="the Hub model repo to push to (created if it does not exist)")
    p.add_argument("--private", action="store_true",
                   help="create the repo as private (an existing repo keeps its visibility)")
    p.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN, or the "
                                    "one `hf auth login` stored)")
    p.add_argument("--message", metavar="TEXT", help="the commit message (default: facediff "
                                                     "push: NAME, step S)")
    p.add_argument("--card", metavar="FILE", help="upload this README.md instead of the "
                                                  "generated card (e.g. facediff card's, edited)")
    p.add_argument("--dry-run", action="store_true",
                   help="stage the repo and list its files with their sizes; upload nothing")
    add_card_options(p)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from facediff.errors import FacediffError
    from facediff.hub.card import load_card_inputs, model_name
    from facediff.hub.push import check_online, check_repo_id, hub_token, stage, upload

    repo = check_repo_id(args.repo)
    token = None
    if not args.dry_run:  # fail before the work: offline, or no token
        check_online()
        token = hub_token(args.token)
    card = None
    if args.card:
        try:
            card = Path(args.card).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise FacediffError(f"cannot read --card {args.card}: "
                                f"{getattr(e, 'strerror', None) or e}") from None
    model, inputs = load_card_inputs(args.model, repo=repo, scores=args.scores,
                                     license=args.license, half=args.half)
    name = model_name(model)
    step = f" (step {model.step})" if model.step is not None else ""
    with tempfile.TemporaryDirectory(prefix="facediff-push-") as tmp:
        staged = stage(model, Path(tmp) / "repo", inputs, card=card)
        total = sum(size for _, size in staged.files)
        print(f"staged {model.source}{step} for {repo}: {len(staged.files)} files, "
              f"{_size(total)}")
        width = max(len(path) for path, _ in staged.files)
        for path, size in staged.files:
            print(f"  {path:<{width}}  {_size(size):>10}")
        if args.dry_run:
            print(f"dry run: nothing uploaded (without --dry-run these go to {repo})")
            return 0
        url = upload(staged, repo, token=token, private=args.private,
                     message=args.message or f"facediff push: {name}{step}")
    print(f"pushed {model.source} to {url}")
    return 0
