"""``facediff data``: ``synth`` draws cartoon faces; ``inspect`` summarises a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands

NAME = "data"
SOURCES = ["auto", "folder", "celeba", "hf", "utkface", "mnist"]


def add_parser(commands: Commands) -> None:
    d = commands.add(NAME, "dataset tools")
    sub = commands.nested(d, "data_command")
    syn = sub.add("synth", "draw a folder of cartoon faces (no download needed)")
    syn.add_argument("--out", required=True)
    syn.add_argument("-n", "--n", type=shared.positive("--n"), default=512)
    syn.add_argument("--size", type=shared.positive("--size"), default=64)
    syn.add_argument("--seed", type=int, default=0)
    ins = sub.add("inspect", "summarise a dataset: source, sizes, labels; write a grid")
    ins.add_argument("path", help="image folder, CelebA dir, MNIST dir, HF dataset or name")
    ins.add_argument("--source", default="auto", choices=SOURCES)
    ins.add_argument("--labels", help="labels file (CSV/TSV/JSON) for an image folder")
    ins.add_argument("--conditions", type=shared.names, help="comma-separated label columns to use")
    ins.add_argument("--split", help="CelebA: train/val/test; HF: a split name")
    ins.add_argument("--size", type=shared.positive("--size"), default=64, help="grid image size")
    ins.add_argument("--grid", default="dataset_grid.png", help="grid PNG to write")
    ins.add_argument("-n", "--n", type=shared.positive("--n"), default=64,
                     help="images in the grid")
    ins.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    shared.add_progress(ins)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "inspect":
        return _inspect(args)
    from facediff.data.synthetic import make_faces

    shared.writable_dir(args.out)
    make_faces(args.out, args.n, args.size, args.seed)
    print(f"wrote {args.n} synthetic faces ({args.size}x{args.size}) to {args.out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from facediff.config import DataConfig
    from facediff.data.inspect import inspect_dataset

    shared.writable_file(args.grid, "--grid")
    path = Path(args.path).expanduser()
    cfg = DataConfig(path=str(path.resolve()) if path.exists() else args.path,
                     source=args.source, labels=args.labels, split=args.split,
                     image_size=args.size, conditions=args.conditions,
                     cache=not args.no_cache)
    report = inspect_dataset(cfg, args.grid, n_grid=args.n, progress=not args.no_progress)
    print(report.text())
    return 0
