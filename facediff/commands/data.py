"""``facediff data``: ``synth`` draws cartoon faces; ``inspect`` summarises a dataset;
``align`` turns a folder of photos into aligned face crops to train on (facediff.data.align)."""

from __future__ import annotations

import argparse
import os
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
    ins.add_argument("--split", help="CelebA: train/val/test/heldout; HF: a split name")
    ins.add_argument("--size", type=shared.positive("--size"), default=64, help="grid image size")
    ins.add_argument("--grid", default="dataset_grid.png", help="grid PNG to write")
    ins.add_argument("-n", "--n", type=shared.positive("--n"), default=64,
                     help="images in the grid")
    ins.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    shared.add_progress(ins)
    ali = sub.add("align", "photos -> aligned face crops (PNG) to train on, resumable, with a "
                           "report of photos without a usable face")
    ali.add_argument("src", metavar="SRC", help="folder of photos (recursive; jpg/png/webp/bmp)")
    ali.add_argument("--out", required=True, metavar="DST",
                     help="folder for the crops (same relative paths, .png); a rerun resumes")
    ali.add_argument("--size", type=shared.positive("--size"), default=128,
                     help="crop side in px (default 128)")
    ali.add_argument("--template", default="ffhq", choices=("ffhq", "celeba", "celebahq"),
                     help="ffhq (default): the FFHQ crop, the whole head with a margin, as "
                          "folder-trained models see faces; celeba: the tighter 140 px CelebA "
                          "crop; celebahq: celebahq-128's close crop (the celebahq models)")
    ali.add_argument("--detector", default="auto", choices=("auto", "yuface", "dlib"),
                     help="face detector (default auto: yuface, else dlib; the faces extra)")
    ali.add_argument("--all-faces", action="store_true",
                     help="a crop of every face (photo_1.png, photo_2.png, ... left to right); "
                          "default: the largest face only")
    ali.add_argument("--workers", type=shared.positive("--workers"),
                     default=min(4, os.cpu_count() or 1),
                     help="processes (default: min(4, CPU count)); 1 runs in this process")
    shared.add_progress(ali)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "inspect":
        return _inspect(args)
    if args.data_command == "align":
        return _align(args)
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


def _align(args: argparse.Namespace) -> int:
    from facediff.data.align import AlignSettings, align_folder

    shared.writable_dir(args.out, create=False)
    settings = AlignSettings(size=args.size, template=args.template, detector=args.detector,
                             all_faces=args.all_faces)
    report = align_folder(args.src, args.out, settings, workers=args.workers,
                          progress=not args.no_progress)
    print(report.text())
    return 0
