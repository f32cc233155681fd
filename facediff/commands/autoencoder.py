"""``facediff autoencoder``: train the first stage of a latent diffusion model, or score one.

    facediff autoencoder train --data DIR --preset ae64 --out runs/ae64
    facediff autoencoder eval runs/ae64 --data HELD_OUT_DIR
    facediff train --data DIR --preset latent64 --autoencoder runs/ae64 --out runs/latent64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facediff.commands import arguments as shared
from facediff.commands import train as train_command
from facediff.commands.arguments import Commands
from facediff.config import Config
from facediff.errors import ConfigError, FacediffError

NAME = "autoencoder"


def add_parser(commands: Commands) -> None:
    c = commands.add(NAME, "train or score the autoencoder of a latent diffusion model")
    sub = commands.nested(c, "autoencoder_command")
    tr = sub.add("train", "train an autoencoder (or resume the run in --out); presets ae64, "
                          "ae128")
    train_command.add_run_arguments(tr)
    tr.add_argument("--init", metavar="AUTOENCODER",
                    help="start a new run from this autoencoder's weights (its export or "
                         "run): to train it on in a new run dir when the old one is lost; "
                         "the discriminator starts anew. A resumed run ignores it")

    ev = sub.add("eval", "PSNR, SSIM and reconstruction FID on held-out images; written "
                         "into the autoencoder's model card")
    ev.add_argument("model", help="autoencoder run or export")
    ev.add_argument("--data", required=True, help="images it never trained on")
    ev.add_argument("-n", "--n", type=shared.positive("--n"), default=2000,
                    help="images scored (default 2000; fewer if the data has fewer)")
    ev.add_argument("--split", default=None,
                    help="how to describe the images in the card (default: the data path)")
    ev.add_argument("--size", type=shared.positive("--size"),
                    help="score at this image size (default: the one it trained at; the "
                         "network is convolutional, so any multiple of its factor works)")
    ev.add_argument("--no-fid", action="store_true", help="PSNR and SSIM only")
    ev.add_argument("--batch-size", type=shared.positive("--batch-size"), default=64)
    ev.add_argument("--out", help="JSON report (default: print only)")
    shared.add_device(ev, precision=False)
    shared.add_progress(ev)


def run(args: argparse.Namespace) -> int:
    if args.autoencoder_command == "eval":
        return _eval(args)
    return _train(args)


def _train(args: argparse.Namespace) -> int:
    from facediff.train.autoencoder import train_autoencoder

    run_dir = shared.writable_dir(args.out, create=False)
    cfg = train_command.run_config(args, run_dir)
    if cfg.task != "autoencoder":
        raise ConfigError("this config trains a diffusion model, not an autoencoder: use an "
                          "autoencoder preset (ae64, ae128) or --set task=autoencoder")
    result = train_autoencoder(cfg, run_dir, progress=not args.no_progress,
                               time_limit_min=args.time_limit)
    return train_command.report(result, args, run_dir)


def _write_card(folder: Path, cfg: Config, digest: str, key: str, section: str) -> None:
    """The export's README.md: what the autoencoder is, and one scores section per size and
    split it was scored on (kept in card.json; a new score of the same key replaces it)."""
    from facediff.atomic import write_text

    store = folder / "card.json"
    sections: dict[str, str] = {}
    if store.is_file():
        try:
            sections = json.loads(store.read_text())
        except (OSError, ValueError):
            sections = {}
    sections[key] = section
    ae = cfg.autoencoder
    head = (f"# Autoencoder ({ae.kind}, factor {2 ** (len(ae.block_out_channels) - 1)}, "
            f"{ae.latent_channels} latent channels, trained at {cfg.data.image_size} px)\n\n"
            f"The first stage of a facediff latent diffusion model (`facediff train "
            f"--autoencoder DIR`). Weights digest: `{digest[:16]}`.\n\n")
    write_text(store, json.dumps(sections, indent=2))
    write_text(folder / "README.md", head + "\n\n".join(sections[k] for k in sorted(sections)))


def _eval(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from facediff.data import load_data
    from facediff.device import resolve_device
    from facediff.eval.reconstruction import card_section, score_reconstructions
    from facediff.model.autoencoder import load_autoencoder
    from facediff.train.checkpoint import EXPORT_DIR, is_exported_model

    first, cfg, digest = load_autoencoder(args.model)
    size = args.size or cfg.data.image_size
    if size % first.factor:
        raise FacediffError(f"--size {size} must be a multiple of the autoencoder's factor "
                            f"{first.factor}")
    data = load_data(dataclasses.replace(cfg.data, path=str(Path(args.data).expanduser()),
                                         source="auto", labels=None, conditions=None,
                                         split=None, val_fraction=0.0, image_size=size),
                     progress=not args.no_progress)
    n = min(args.n, len(data))
    if n < 2:
        raise FacediffError(f"{args.data} has {len(data)} usable image(s); at least 2 needed")
    images = np.array(data.images[:n])  # off the cache's memory map
    extractor = None
    device = resolve_device(args.device)
    if not args.no_fid:
        from facediff.eval.features import InceptionFeatures

        extractor = InceptionFeatures(device=device)
    scores = score_reconstructions(first, images, extractor=extractor,
                                   batch_size=args.batch_size, device=device,
                                   progress=not args.no_progress)
    print(scores.line())
    split = args.split or f"{args.data} (first {n} of {len(data)} images)"
    card_dir = Path(args.model)
    if not is_exported_model(card_dir) and is_exported_model(card_dir / EXPORT_DIR):
        card_dir = card_dir / EXPORT_DIR
    # the card describes the export: only when the weights scored are the export's (a run
    # whose newest checkpoint is newer than its export has none to describe yet)
    if is_exported_model(card_dir) and load_autoencoder(card_dir)[2] == digest:
        _write_card(card_dir, cfg, digest, f"{size} px, {split}",
                    card_section(scores, split=f"{split}, at {size} px", source=args.model))
        print(f"model card: {card_dir / 'README.md'}")
    if args.out:
        out = shared.writable_file(args.out)
        from facediff.atomic import write_text

        write_text(out, json.dumps({**scores.as_dict(), "split": split, "model": args.model,
                                    "size": size, "digest": digest}, indent=2))
    return 0
