"""Every number a release model's card needs (issue 21), in one command (run by hand).

    python bench/release_eval.py exports/celebahq-64 --split ~/data/celebahq128 \\
        --out ~/runs/eval/celebahq-64 --n 2000
    python bench/release_eval.py exports/celeba-attrs-64 --ref ../shared/datasets/celeba-6k \\
        --ref-split heldout --train-split train --classifier exports/celeba-attrs-64/classifier \\
        --out ~/runs/eval/attrs64 --n 1440

With ``--split`` (bench/split.py's folder): FID, KID, precision and recall of ``--n`` samples
(image i from seed i, the model's own sampler) against the held-out faces and, the same
samples, against as many training faces (``train2000/``): the gap between the two is the
memorisation check; and the real-vs-real floor (those training faces against the held-out
ones) at the same n and size. With ``--ref`` (a dataset with its own split, e.g. CelebA's
val + test, ``--ref-split heldout``) the samples are scored against it, and with
``--train-split`` also against as many faces of that split, beside the same floor.
``--classifier`` adds the attribute (control) accuracy, either way: a conditional model's
samples take their conditions from the labels of the faces they are scored against (the
held-out ones). Then the seconds to sample 16 and 1,000 faces on this machine
(``--skip-timing``: not now), and the card's grid of 16 faces (seeds 0-15) at 2x, nearest-neighbour.
Writes OUT/summary.json and OUT/summary.md (the card's table); every score goes through
``facediff eval``, the commands printed as they run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from latent_decision import facediff, scores


def seconds(model_dir: str, n: int, batch: int) -> float:
    """Wall seconds to sample ``n`` faces in batches of ``batch`` (the model's sampler and
    precision, decoding included), after a warm-up batch."""
    import torch

    import facediff as fd

    model = fd.load(model_dir, device="cpu")  # tunes the allocator as `facediff sample` does
    model.sample_tensor(min(n, 8), batch_size=min(n, 8))
    torch.manual_seed(0)
    t = time.perf_counter()
    model.sample_tensor(n, batch_size=batch)
    return time.perf_counter() - t


def grid(model_dir: str, path: Path) -> None:
    """16 faces (seeds 0-15) in a 4x4 grid at twice the model's size, no smoothing."""
    from PIL import Image

    import facediff as fd
    from facediff.viz.grid import make_grid

    faces = fd.load(model_dir, device="cpu").sample_tensor(16, seed=0).numpy()
    g = make_grid(faces, nrow=4)
    g.resize((2 * g.width, 2 * g.height), Image.NEAREST).save(path)


def table(r: dict) -> str:
    rows = ["| against | n | FID | KID x1e3 | precision | recall |", "|---|---|---|---|---|---|"]
    for what, s in r.items():
        if isinstance(s, dict) and "fid" in s:
            kid = f"{1e3 * s['kid']:.2f} ± {1e3 * s.get('kid_std', 0):.2f}"
            rows.append(f"| {what} | {s.get('n', '')} | {s['fid']:.2f} | {kid} | "
                        f"{s.get('precision', float('nan')):.3f} | "
                        f"{s.get('recall', float('nan')):.3f} |")
    return "\n".join(rows)


def accuracy(row: dict) -> dict:
    """The control accuracy's keys of a ``facediff eval --classifier`` row (none without)."""
    return {k: v for k, v in row.items() if k == "control_acc" or k.startswith("acc/")}


def add_timing(model: str, out: Path, batch: int) -> None:
    """The two sampling times, measured now (with nothing else running), added to the scores
    already in OUT/summary.json (a run with --skip-timing), and OUT/summary.md rewritten."""
    path = out / "summary.json"
    r = json.loads(path.read_text()) if path.is_file() else {"model": model}
    r["seconds_16"] = seconds(model, 16, 16)
    r["seconds_1000"] = seconds(model, 1000, batch)
    path.write_text(json.dumps(r, indent=2))
    write_md(r, out)


def write_md(r: dict, out: Path) -> None:
    md = table(r)
    ref = r.get("reference") or r.get("held-out") or {}
    if "control_acc" in ref:
        per = ", ".join(f"{k[4:]} {v:.3f}" for k, v in ref.items() if k.startswith("acc/"))
        md += (f"\n\nAttribute accuracy (the classifier's reading): mean "
               f"{ref['control_acc']:.3f}; {per}.")
    if "seconds_16" in r:
        md += (f"\n\nSampling on this machine: 16 faces in {r['seconds_16']:.1f} s, "
               f"1,000 in {r['seconds_1000']:.0f} s.")
    (out / "summary.md").write_text(md + "\n")
    print(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an exported model, a run dir or a bundled name")
    p.add_argument("--out", required=True)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--split", help="bench/split.py's folder (heldout/, train2000/)")
    where.add_argument("--ref", help="a dataset to score against (with --ref-split)")
    p.add_argument("--ref-split", help="the reference's split, e.g. heldout (CelebA val+test)")
    p.add_argument("--train-split", help="with --ref: the training split (e.g. train) for the "
                                         "train row and the real-vs-real floor")
    p.add_argument("--classifier", help="attribute classifier dir: control accuracy")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--timing-only", action="store_true",
                   help="only the sampling times, added to OUT/summary.json (scores kept)")
    args = p.parse_args()
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if args.timing_only:
        add_timing(args.model, out, args.batch_size)
        return
    if not (args.split or args.ref):
        p.error("one of --split and --ref is needed (or --timing-only)")
    from facediff.config import Config
    from facediff.train.checkpoint import read_model

    cfg: Config = read_model(args.model)[0]
    size, n, bs = cfg.data.image_size, str(args.n), str(args.batch_size)
    r: dict = {"model": args.model, "size": size}
    held = out / "heldout"
    score = ["eval", args.model, "-n", n, "--batch-size", bs, "--save-samples", "--out",
             str(held), "--no-progress"]
    clf = ["--classifier", args.classifier] if args.classifier else []
    if args.split:
        split = Path(args.split).expanduser()
        # a conditional model draws its conditions from the held-out faces' labels
        facediff(*score, "--ref", str(split / "heldout"), *clf)
        samples = next((held / "samples").iterdir())
        facediff("eval", "--images", str(samples), "--ref", str(split / "train2000"),
                 "--n", n, "--out", str(out / "train"), "--no-progress")
        facediff("eval", "--images", str(split / "train2000"), "--ref", str(split / "heldout"),
                 "--size", str(size), "--n", n, "--out", str(out / "floor"), "--no-progress")
        row = json.loads((held / "results.json").read_text())[0]
        r.update({"held-out": {**scores(held), **accuracy(row)}, "train": scores(out / "train"),
                  "real vs real (train vs held-out)": scores(out / "floor")})
    else:
        extra = ["--ref-split", args.ref_split] if args.ref_split else []
        facediff(*score, "--ref", args.ref, *extra, *clf)
        row = json.loads((held / "results.json").read_text())[0]
        if not args.train_split:
            r["reference"] = row  # with the classifier: the control accuracy's keys too
        else:  # the same three rows as --split, from the dataset's own partitions
            samples = next((held / "samples").iterdir())
            facediff("eval", "--images", str(samples), "--ref", args.ref, "--ref-split",
                     args.train_split, "--ref-n", n, "--size", str(size), "--out",
                     str(out / "train"), "--no-progress")
            facediff("eval", "--images", args.ref, "--images-split", args.train_split,
                     "-n", n, "--ref", args.ref, *extra, "--size", str(size), "--out",
                     str(out / "floor"), "--no-progress")
            r.update({"held-out": {**scores(held), **accuracy(row)},
                      "train": scores(out / "train"),
                      "real vs real (train vs held-out)": scores(out / "floor")})
    if not args.skip_timing:
        r["seconds_16"] = seconds(args.model, 16, 16)
        r["seconds_1000"] = seconds(args.model, 1000, args.batch_size)
    grid(args.model, out / "grid-2x.png")
    (out / "summary.json").write_text(json.dumps(r, indent=2))
    write_md(r, out)


if __name__ == "__main__":
    main()
