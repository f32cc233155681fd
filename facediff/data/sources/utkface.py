"""UTKFace: labels in the file names, ``AGE_GENDER_RACE_DATE.jpg[.chip.jpg]``.

Gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. Ages are
grouped into the bins of ``data.utk_age_bins`` (edges: [0, 3, 10] -> 0-2, 3-9, 10+).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.config import DataConfig
from facediff.data.conditions import UNSPECIFIED, Condition, ConditionSpec
from facediff.data.records import Records
from facediff.data.sources.folder import (
    IMAGE_EXTENSIONS,
    data_root,
    files_fingerprint,
    find_images,
)
from facediff.errors import DataError

GENDERS = ["male", "female"]
RACES = ["White", "Black", "Asian", "Indian", "Others"]
MAX_AGE = 130  # older is a typo in the name, not an age
# also the names ``facediff data align`` gives them: 26_0_2_2017...jpg.chip.png
_NAME = re.compile(r"^\d{1,3}_\d_\d_\d{8,}\.jpg(\.chip\.(jpg|png))?$|^\d{1,3}_\d_\d_\d{8,}\.png$",
                   re.IGNORECASE)
_DATE_DIGITS = 8  # a trailing field this long is the date (YYYYMMDDHHMMSSmmm), not a label


def is_utkface(path: Path) -> bool:
    """Whether most images under ``path`` are named like UTKFace's (``26_0_2_2017...jpg``)."""
    p = Path(path)
    if not p.is_dir():
        return False
    names = [f.name for f in p.rglob("*")
             if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")]
    return bool(names) and sum(bool(_NAME.match(n)) for n in names) * 2 > len(names)


def age_bin_values(edges: Sequence[int]) -> list[str]:
    """Names of the age bins: [0, 3, 10] -> ["0-2", "3-9", "10+"]."""
    edges = list(edges)
    if not edges or any(not isinstance(e, int) or e < 0 for e in edges):
        raise DataError(f"data.utk_age_bins must be non-negative whole ages, got {edges}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise DataError(f"data.utk_age_bins must be increasing, got {edges}")
    out = [f"{a}-{b - 1}" if b - 1 > a else str(a) for a, b in itertools.pairwise(edges)]
    return [*out, f"{edges[-1]}+"]


def parse_name(name: str) -> tuple[int | None, int | None, int | None] | None:
    """(age, gender, race) from a file name, None for a field that is missing or out of
    range; None if the name is not a UTKFace name at all."""
    stem = name
    while Path(stem).suffix.lower() in (*IMAGE_EXTENSIONS, ".chip"):  # .jpg.chip.jpg, .png
        stem = stem[:-len(Path(stem).suffix)]
    parts = stem.split("_")
    if not 3 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        return None
    if len(parts) == 4 or len(parts[-1]) >= _DATE_DIGITS:
        parts = parts[:-1]  # drop the date
    fields = [int(p) for p in parts] + [-1] * (3 - len(parts))
    age, gender, race = fields
    return (age if 0 <= age <= MAX_AGE else None,
            gender if 0 <= gender < len(GENDERS) else None,
            race if 0 <= race < len(RACES) else None)


def _examples(items: list[str]) -> str:
    return ", ".join(items[:3]) + ("..." if len(items) > 3 else "")


def utkface_records(cfg: DataConfig) -> Records:
    """UTKFace images with age (binned), gender and race conditions."""
    root = data_root(cfg.path)
    edges = list(cfg.utk_age_bins)
    ages = age_bin_values(edges)
    files = find_images(root)
    kept: list[Path] = []
    rows: list[list[int]] = []
    bad: list[str] = []
    partial: list[str] = []
    unknown = {"age": 0, "gender": 0, "race": 0}
    young: list[str] = []
    for p in files:
        parsed = parse_name(p.name)
        if parsed is None:
            bad.append(str(p.relative_to(root)))
            continue
        age, gender, race = parsed
        if None in parsed:
            partial.append(p.name)
            for key, v in zip(unknown, parsed, strict=True):
                unknown[key] += v is None
        age_idx = UNSPECIFIED
        if age is not None:
            age_idx = int(np.searchsorted(edges, age, side="right")) - 1
            if age_idx < 0:
                young.append(p.name)
                age_idx = UNSPECIFIED
        rows.append([age_idx, UNSPECIFIED if gender is None else gender,
                     UNSPECIFIED if race is None else race])
        kept.append(p)
    notes = []
    if bad:
        notes.append(f"{len(bad)} images are not named AGE_GENDER_RACE_DATE.jpg (skipped): "
                     f"{_examples(bad)}")
    if partial:
        which = ", ".join(f"{k} {n}" for k, n in unknown.items() if n)
        notes.append(f"{len(partial)} file names lack a field or have an out-of-range value "
                     f"(kept, that label unknown: {which}): {_examples(partial)}")
    if young:
        notes.append(f"{len(young)} images are younger than the first age bin ({edges[0]}); "
                     f"their age is unknown: {_examples(young)}")
    if not kept:
        raise DataError(f"no image in {root} is named like UTKFace's "
                        f"(AGE_GENDER_RACE_DATE.jpg), e.g. {files[0].name}")
    spec = ConditionSpec([
        Condition("age", "categorical", ages),
        Condition("gender", "categorical", list(GENDERS)),
        Condition("race", "categorical", list(RACES)),
    ])
    labels = np.asarray(rows, dtype=np.int16).reshape(len(kept), 3)
    return Records(
        "utkface", str(root), [str(p.relative_to(root)) for p in kept],
        lambda i: Image.open(kept[i]), spec, labels,
        files_fingerprint(kept, root, extra=f"utk_age_bins={edges}".encode()), notes,
    )
