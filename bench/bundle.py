"""Copy a trained run's EMA weights into the package as a bundled model (float16 safetensors).

    python bench/bundle.py ~/runs/bundled/celebahq32 celebahq-32 --data-name celebahq-64

The config keeps everything needed to sample; its data path becomes the dataset's name (the
training machine's path means nothing elsewhere). The model card (MODEL_CARD.md) is written by
hand from measured numbers (docs: see the card's own commands) and is kept when re-bundling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from facediff.assets import ASSETS, CARD
from facediff.train.checkpoint import (
    export_model,
    exported_step,
    is_exported_model,
    read_model,
)

LIMIT_MB = 25


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run dir with an export (RUN/model) or an exported model")
    ap.add_argument("name", help="bundled model name: facediff/assets/NAME")
    ap.add_argument("--data-name", required=True, help="dataset name written into the config")
    args = ap.parse_args()
    src = Path(args.run).expanduser()
    if (src / "model").is_dir():
        src = src / "model"
    if not is_exported_model(src):
        print(f"error: {args.run} has no export (RUN/model); run `facediff export` first",
              file=sys.stderr)
        return 2
    cfg, weights, source = read_model(src)
    n = sum(v.numel() for v in weights.values())
    if n * 2 > LIMIT_MB * 2**20:  # float16: 2 bytes per parameter, before touching the package
        print(f"error: {n / 1e6:.2f} M parameters is over the {LIMIT_MB} MB limit for a "
              "bundled model", file=sys.stderr)
        return 1
    step = exported_step(src) or 0
    cfg.data.path = args.data_name
    out = ASSETS / args.name
    card = (out / CARD).read_text() if (out / CARD).is_file() else None
    export_model(out, cfg, weights, dtype=torch.float16, step=step)
    if card is not None:
        (out / CARD).write_text(card)
    size = (out / "weights.safetensors").stat().st_size / 2**20
    print(f"{source} (step {step}) -> {out}: {n / 1e6:.2f} M parameters, {size:.1f} MiB fp16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
