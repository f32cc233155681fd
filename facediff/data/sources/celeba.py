"""CelebA in its official layout: ``img_align_celeba/``, ``list_attr_celeba.txt`` (40 binary
attributes, +1/-1) and optionally ``list_eval_partition.txt`` (0 train, 1 val, 2 test)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facediff.config import DataConfig
from facediff.data.conditions import Condition, ConditionSpec
from facediff.data.records import Box, Records
from facediff.data.sources.folder import IMAGE_EXTENSIONS, data_root, files_fingerprint
from facediff.errors import DataError

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGES_DIR = "img_align_celeba"
# official partitions by list_eval_partition.txt's code; "heldout" is val and test together:
# every face the official train split never shows (a model's held-out evaluation set)
SPLITS = {"train": {0}, "val": {1}, "valid": {1}, "validation": {1}, "test": {2},
          "heldout": {1, 2}}
# the aligned images the crop size (``data.celeba_crop``) is given in
REFERENCE_SIZE = (178, 218)
# the 40 attributes of list_attr_celeba.txt
CELEBA_ATTRIBUTES = frozenset((
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips"
    " Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby"
    " Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male"
    " Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin"
    " Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair"
    " Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace"
    " Wearing_Necktie Young"
).split())
_VALUES = {"1": 1, "+1": 1, "-1": 0, "0": 0}


def _first_file(root: Path, name: str, subdirs: tuple[str, ...]) -> Path | None:
    for sub in ("", *subdirs):
        p = root / sub / name if sub else root / name
        if p.is_file():
            return p
    return None


def _attr_file(root: Path) -> Path | None:
    return _first_file(root, ATTR_FILE, ("Anno",))


def _partition_file(root: Path) -> Path | None:
    return _first_file(root, PARTITION_FILE, ("Eval",))


def _images_dir(root: Path) -> Path | None:
    """``img_align_celeba/``, or the ``img_align_celeba/img_align_celeba/`` of some mirrors."""
    for d in (root / IMAGES_DIR, root / "Img" / IMAGES_DIR):
        if d.is_dir():
            nested = d / IMAGES_DIR
            if nested.is_dir() and not _has_images(d):
                return nested
            return d
    return None


def _has_images(d: Path) -> bool:
    with os.scandir(d) as it:
        return any(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in it)


def is_celeba(path: Path) -> bool:
    """Whether ``path`` holds the official CelebA layout (attribute file and images folder)."""
    p = Path(path)
    return p.is_dir() and _attr_file(p) is not None and _images_dir(p) is not None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e


def read_attr_file(path: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Attribute names, image names (file order), 0/1 labels (N, K) int16, and notes."""
    lines = _lines(path)
    if not lines or not lines[0].strip().isdigit():
        raise DataError(f"{path}, line 1: expected the number of images, found "
                        f"{(lines[0].strip()[:40] if lines else 'an empty file')!r}")
    count = int(lines[0].strip())
    names = lines[1].split() if len(lines) > 1 else []
    if not names or names[0].lower().endswith(IMAGE_EXTENSIONS):
        raise DataError(f"{path}, line 2: expected the attribute names (header missing)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}, line 2: attribute {dup!r} is named twice")
    k = len(names)
    files: list[str] = []
    rows: list[list[int]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != k + 1:
            raise DataError(f"{path}, line {lineno}: expected an image name and {k} values, "
                            f"found {len(parts)} fields")
        try:
            row = [_VALUES[v] for v in parts[1:]]
        except KeyError:
            bad = next(v for v in parts[1:] if v not in _VALUES)
            raise DataError(f"{path}, line {lineno}: value {bad!r} is not 1 or -1") from None
        name = parts[0]
        if name in seen:
            raise DataError(f"{path}, line {lineno}: {name} already has a row "
                            f"(line {seen[name]})")
        seen[name] = lineno
        files.append(name)
        rows.append(row)
    if not files:
        raise DataError(f"{path} has no image rows")
    notes = []
    if count != len(files):
        notes.append(f"{path.name} says {count} images but has {len(files)} rows")
    labels = np.asarray(rows, dtype=np.int16).reshape(len(files), k)
    return names, files, labels, notes


def read_partition_file(path: Path) -> dict[str, int]:
    """Image name -> partition (0 train, 1 val, 2 test)."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}, line {lineno}: expected 'IMAGE 0|1|2', "
                            f"found {line.strip()[:60]!r}")
        out[parts[0]] = int(parts[1])
    return out


def celeba_crop_box(size: tuple[int, int], crop: int) -> Box | None:
    """The square face crop for an image of ``size`` (w, h); ``crop`` is in px of 178x218.

    Centred, as the usual CelebA-64 preprocessing does (140 px: box (19, 39, 159, 179));
    for images of another size the box scales with the width. 0 = no crop.
    """
    if crop <= 0:
        if crop < 0:
            raise DataError(f"data.celeba_crop must be >= 0 (0 = no crop), got {crop}")
        return None
    w, h = size
    side = round(crop * w / REFERENCE_SIZE[0])
    if side > min(w, h) or side < 1:
        raise DataError(f"data.celeba_crop={crop} does not fit the {w}x{h} CelebA images "
                        f"(at most {min(REFERENCE_SIZE)} for 178x218)")
    left, top = round((w - side) / 2), round((h - side) / 2)
    return left, top, left + side, top + side


def _image_size(paths: list[Path], notes: list[str]) -> tuple[int, int]:
    for p in paths[:10]:
        try:
            with Image.open(p) as img:
                return img.size
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    notes.append(f"could not open {paths[0].name} to measure the images; assumed 178x218")
    return REFERENCE_SIZE


def _examples(items: list[str]) -> str:
    return ", ".join(items[:3]) + ("..." if len(items) > 3 else "")


def celeba_records(cfg: DataConfig) -> Records:
    """CelebA images with their 40 attributes, for ``cfg.split`` (None/all, train, val, test,
    heldout = val + test)."""
    root = data_root(cfg.path)
    attr_path = _attr_file(root)
    if attr_path is None:
        raise DataError(f"{root} is not a CelebA folder: no {ATTR_FILE} (looked in . and Anno/)")
    img_dir = _images_dir(root)
    if img_dir is None:
        raise DataError(f"{root} is not a CelebA folder: no {IMAGES_DIR}/ images folder")

    split = (cfg.split or "all").strip().lower()
    if split != "all" and split not in SPLITS:
        raise DataError(f"unknown CelebA split {cfg.split!r}; choose all, train, val, test or "
                        "heldout (val and test)")
    part_path = _partition_file(root)
    if split != "all" and part_path is None:
        raise DataError(f"data.split={cfg.split} needs {PARTITION_FILE} in {root} "
                        "(or Eval/); without it use split=all")

    names, files, labels, notes = read_attr_file(attr_path)
    rows = list(range(len(files)))
    if split != "all":
        assert part_path is not None
        partition = read_partition_file(part_path)
        want = SPLITS[split]
        unassigned = [f for f in files if f not in partition]
        if unassigned:
            notes.append(f"{len(unassigned)} label rows have no row in {PARTITION_FILE} and are "
                         f"left out of split {split}: {_examples(unassigned)}")
        rows = [i for i in rows if partition.get(files[i]) in want]

    with os.scandir(img_dir) as it:
        on_disk = {e.name: Path(e.path) for e in it
                   if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
                   and e.is_file()}
    by_stem = {Path(n).stem: p for n, p in on_disk.items()}  # mirrors that re-encode as png
    kept_rows: list[int] = []
    paths: list[Path] = []
    missing: list[str] = []
    for i in rows:
        p = on_disk.get(files[i]) or by_stem.get(Path(files[i]).stem)
        if p is None:
            missing.append(files[i])
        else:
            kept_rows.append(i)
            paths.append(p)
    if missing:
        notes.append(f"{len(missing)} label rows name missing images (skipped): "
                     f"{_examples(missing)}")
    labelled = {Path(f).stem for f in files}
    unlabelled = sorted(n for n in on_disk if Path(n).stem not in labelled)
    if unlabelled:
        notes.append(f"{len(unlabelled)} images have no row in {attr_path.name} (skipped): "
                     f"{_examples(unlabelled)}")
    if not paths:
        where = f" in split {split}" if split != "all" else ""
        raise DataError(f"no CelebA images{where}: none of the images named in {attr_path} "
                        f"are in {img_dir}")

    spec = ConditionSpec([Condition(n, "binary") for n in names])
    crop_box = celeba_crop_box(_image_size(paths, notes), cfg.celeba_crop)
    extra = hashlib.sha256(attr_path.read_bytes()).digest()
    if part_path is not None:
        extra += hashlib.sha256(part_path.read_bytes()).digest()
    extra += f"|split={split}|crop={crop_box}".encode()
    return Records(
        "celeba", str(root), [str(p.relative_to(root)) for p in paths],
        lambda i: Image.open(paths[i]), spec, labels[kept_rows],
        files_fingerprint(paths, root, extra=extra), notes, crop_box,
    )
