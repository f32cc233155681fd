"""Copy a trained run's EMA weights into the package as a bundled model (float16 safetensors).

    python bench/bundle.py ~/runs/bundled/celebahq32 celebahq-32 --data-name celebahq-64

The config keeps everything needed to sample; its data path becomes the dataset's name (the
training machine's path means nothing elsewhere). An attribute classifier shipped beside the
model (``SRC/classifier/``, `facediff classifier train`) comes along, its weights in float16
too: `facediff eval` finds it there to read a conditional model's attribute accuracy. The
model card (MODEL_CARD.md) is written by hand from measured numbers (docs: see the card's own
commands) and is kept when re-bundling, and so is its grid.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from facediff.assets import ASSETS, CARD, GRID
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
    kept = {f: (out / f).read_bytes() for f in (CARD, GRID) if (out / f).is_file()}
    export_model(out, cfg, weights, dtype=torch.float16, step=step)
    for f, data in kept.items():
        (out / f).write_bytes(data)
    clf = copy_classifier(src, out)
    size = sum(f.stat().st_size for f in out.rglob("*.safetensors")) / 2**20
    print(f"{source} (step {step}) -> {out}: {n / 1e6:.2f} M parameters, {size:.1f} MiB fp16"
          + (" with its classifier" if clf else ""))
    return 0


def copy_classifier(src: Path, out: Path) -> bool:
    """``src/classifier`` (or the run dir's, beside RUN/model) into ``out/classifier``, its
    weights as float16; False if there is none."""
    from safetensors.torch import load_file, save_file

    from facediff.eval.classifier import CLASSIFIER_DIR

    for d in (src, src.parent):
        clf = d / CLASSIFIER_DIR
        if (clf / "classifier.json").is_file():
            dest = out / CLASSIFIER_DIR
            dest.mkdir(exist_ok=True)
            (dest / "classifier.json").write_text((clf / "classifier.json").read_text())
            weights = load_file(str(clf / "weights.safetensors"))
            save_file({k: v.half() if v.is_floating_point() else v
                       for k, v in weights.items()}, str(dest / "weights.safetensors"))
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
