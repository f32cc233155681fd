"""A labels file beside an image folder: CSV, TSV or JSON with a file-name column and label
columns (FairFace's ``fairface_label_train.csv`` with ``file, age, gender, race`` is the model).

Each label column becomes a condition: binary when its values are 0/1, -1/+1, true/false or
yes/no; categorical otherwise (values in natural order: "3-9" before "10-19"). Empty cells are
UNSPECIFIED (unknown). A column that looks like an id or free text (a different value in every
row, or many distinct values that are not integers) is left out with a note unless
``data.conditions`` names it. Images are matched by relative path, else by unique base name;
rows naming missing images and images without a row are skipped and counted, never guessed.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.data.conditions import UNSPECIFIED, Condition, ConditionSpec
from facediff.data.records import Records
from facediff.data.sources.folder import files_fingerprint, find_images
from facediff.errors import DataError

FILE_COLUMNS = ("file", "filename", "file_name", "image", "image_id", "img", "path", "name",
                "image_name", "img_name", "id")
_BINARY_TOKENS = {"0", "1", "-1", "+1", "true", "false", "yes", "no"}
_MAX_CATEGORIES = 100
# Columns not named in data.conditions are left out when they look like an id or free text.
# Below _FEW_ROWS labelled rows nothing is judged: in a small file a real categorical column
# can hold a different value in every row (four faces, four age bins); above it a column of
# at most _FEW_ROWS categories must repeat one, and integer ages (~100 values) usually do.
_FEW_ROWS = 20
# Non-integer values (text, decimals) with more distinct values than this, or than half the
# labelled rows, are names, captions or measurements: the attributes a face model is
# conditioned on have a few values each (FairFace: at most 9, UTKFace bins: 5, CelebA: 2), and
# a condition needs many images per value to learn it. Integers (codes, ages) are exempt.
_MAX_TEXT_VALUES = 50
_INTEGER = re.compile(r"[+-]?\d+")


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV/TSV/JSON labels file, all cells as stripped strings."""
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix.lower() in (".json", ".jsonl"):
        return _read_json(path, text)
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" or "\t" in text.split("\n", 1)[0] \
        else "excel"
    rows = [r for r in csv.reader(text.splitlines(), dialect=dialect) if any(c.strip()
                                                                              for c in r)]
    if len(rows) < 2:
        raise DataError(f"labels file {path} has no data rows")
    header = [h.strip() for h in rows[0]]
    body = []
    for lineno, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise DataError(f"{path} line {lineno}: {len(r)} cells, header has {len(header)}")
        body.append([c.strip() for c in r])
    return header, body


def _read_json(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
    try:
        if path.suffix.lower() == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"cannot parse labels file {path}: {e}") from e
    if isinstance(data, dict):  # {"a.jpg": {"age": ...}, ...}
        data = [{"file": k, **v} for k, v in data.items() if isinstance(v, dict)]
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise DataError(f"labels file {path} must be a list of objects (one per image)")
    header = list(dict.fromkeys(k for d in data for k in d))

    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v).strip()

    return header, [[cell(d.get(k)) for k in header] for d in data]


def _natural_key(v: str) -> tuple:
    m = re.match(r"^\s*(-?\d+(?:\.\d+)?)", v)
    return (0, float(m.group(1)), v) if m else (1, 0.0, v.lower())


def column_condition(name: str, cells: Sequence[str]) -> Condition | None:
    """The condition a column of label cells describes (None: not usable as a condition)."""
    present = {c for c in cells if c != ""}
    if not present:
        return None
    tokens = {c.lower() for c in present}
    binary = Condition(name, "binary")
    if tokens <= _BINARY_TOKENS and len({binary.index_of(tok) for tok in tokens}) == len(tokens):
        return binary  # each value means a different state (not e.g. "0" and "-1")
    if len(present) > _MAX_CATEGORIES:
        return None
    return Condition(name, "categorical", sorted(present, key=_natural_key))


def _not_a_condition(cond: Condition, cells: Sequence[str]) -> str | None:
    """Why a usable column looks like an id or free text rather than a condition (None: it
    looks like a condition). Binary columns always look like conditions."""
    if cond.kind == "binary":
        return None
    present = [c for c in cells if c != ""]
    n, distinct = len(present), len(cond.values)
    if n <= _FEW_ROWS:
        return None
    if distinct == n:
        return f"a different value in each of its {n} rows, like an id or free text"
    if all(_INTEGER.fullmatch(c) for c in cond.values):
        return None
    if distinct > _MAX_TEXT_VALUES or distinct > n / 2:
        if all(_is_number(c) for c in cond.values):
            return f"{distinct} distinct decimal values in {n} rows, like measurements"
        return f"{distinct} distinct text values in {n} rows, like free text"
    return None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def encode_column(cond: Condition, cells: Sequence[str]) -> np.ndarray:
    out = np.full(len(cells), UNSPECIFIED, dtype=np.int16)
    for i, c in enumerate(cells):
        if c != "":
            out[i] = cond.index_of(c)
    return out


def unknown_name_error(name: str, valid: Sequence[str], what: str = "condition") -> DataError:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DataError(f"unknown {what} {name!r}{hint}; valid: {', '.join(valid)}")


def build_conditions(
    header: Sequence[str], rows: Sequence[Sequence[str]], columns: Sequence[str], *,
    wanted: Sequence[str] | None, source: str, notes: list[str] | None = None,
) -> tuple[ConditionSpec, np.ndarray]:
    """Spec and labels for ``columns`` (or the ``wanted`` subset of them, in that order).

    Without ``wanted``, columns that cannot be a condition or look like an id or free text
    (``_not_a_condition``) are left out, and a note appended to ``notes`` says which, why and
    how to include them.
    """
    usable: dict[str, Condition] = {}
    left_out: list[tuple[str, str, bool]] = []  # (column, why, can be named)
    for name in columns:
        j = header.index(name)
        cells = [r[j] for r in rows]
        cond = column_condition(name, cells)
        if cond is None:
            left_out.append((name, "no values" if not any(cells) else
                             f"more than {_MAX_CATEGORIES} distinct values", False))
            continue
        usable[name] = cond
        why = _not_a_condition(cond, cells) if wanted is None else None
        if why is not None:
            left_out.append((name, why, True))
    if wanted is None:
        skip = {name for name, _, _ in left_out}
        names = [n for n in usable if n not in skip]
        if left_out and notes is not None:
            notes.append(_left_out_note(left_out, names, source))
    else:
        names = []
        lowered = {n.lower(): n for n in columns}
        for w in wanted:
            real = w if w in columns else lowered.get(w.lower())
            if real is None:
                raise unknown_name_error(w, list(usable) or list(columns))
            if real not in usable:
                raise DataError(f"column {real!r} of {source} cannot be a condition "
                                f"(empty, or more than {_MAX_CATEGORIES} distinct values)")
            names.append(real)
    spec = ConditionSpec([usable[n] for n in names])
    labels = np.stack([encode_column(usable[n], [r[header.index(n)] for r in rows])
                       for n in names], axis=1) if names else np.zeros((len(rows), 0), np.int16)
    return spec, labels


def _left_out_note(left_out: Sequence[tuple[str, str, bool]], kept: Sequence[str],
                   source: str) -> str:
    what = "; ".join(f"{name!r} ({why})" for name, why, _ in left_out)
    fate = (f"the conditions are {', '.join(kept)}" if kept
            else "no column is left, so the images are unconditional")
    note = f"label columns of {source} left out of the conditions: {what}; {fate}"
    namable = [name for name, _, ok in left_out if ok]
    if namable:
        setting = shlex.quote("data.conditions=" + ",".join([*kept, *namable]))
        note += f"; to use them as conditions, list every condition: --set {setting}"
    return note


def labeled_folder_records(root: str | Path, labels_path: str | Path,
                           wanted: Sequence[str] | None = None) -> Records:
    r, lp = Path(root), Path(labels_path)
    header, rows = read_table(lp)
    lowered = [h.lower() for h in header]
    file_col = next((lowered.index(c) for c in FILE_COLUMNS if c in lowered), None)
    if file_col is None:
        raise DataError(
            f"labels file {lp} has no file-name column (one of {', '.join(FILE_COLUMNS[:6])}, "
            f"...); its columns: {', '.join(header)}"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"labels file {lp} has the column {dupes[0]!r} more than once")
    label_cols = [h for i, h in enumerate(header) if i != file_col]
    if not label_cols:
        raise DataError(f"labels file {lp} has no label columns besides {header[file_col]!r}")
    files = find_images(r)
    by_rel = {p.relative_to(r).as_posix(): p for p in files}
    by_base: dict[str, list[Path]] = {}
    for p in files:
        by_base.setdefault(p.name, []).append(p)
    matched: dict[Path, int] = {}
    missing: list[str] = []
    duplicate: list[str] = []
    for i, row in enumerate(rows):
        name = row[file_col].replace("\\", "/").removeprefix("./")
        p = by_rel.get(name)
        if p is None and "/" not in name:  # a bare name: the one file of that name anywhere
            cands = by_base.get(name, [])
            p = cands[0] if len(cands) == 1 else None
        if p is None and "/" in name:  # rows relative to a folder above data.path
            cands = [q for q in by_base.get(Path(name).name, [])
                     if q.resolve().as_posix().endswith("/" + name)]
            p = cands[0] if len(cands) == 1 else None
        if p is None:
            missing.append(row[file_col])
        elif p in matched:
            duplicate.append(row[file_col])
        else:
            matched[p] = i
    notes = []
    if missing:
        notes.append(f"{len(missing)} label rows name missing images (skipped): "
                     + ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else ""))
    if duplicate:
        raise DataError(f"labels file {lp} lists {duplicate[0]!r} more than once")
    unlabeled = [p for p in files if p not in matched]
    if unlabeled:
        notes.append(f"{len(unlabeled)} images have no label row (skipped): "
                     + ", ".join(str(p.relative_to(r)) for p in unlabeled[:3])
                     + (" ..." if len(unlabeled) > 3 else ""))
    kept = [p for p in files if p in matched]
    if not kept:
        raise DataError(f"no image in {r} has a row in {lp} (first row names "
                        f"{rows[0][file_col]!r})")
    kept_rows = [rows[matched[p]] for p in kept]
    spec, labels = build_conditions(header, kept_rows, label_cols, wanted=wanted,
                                    source=str(lp), notes=notes)
    if not len(spec):  # data.conditions=[]: an unconditional model of the labelled images
        spec, labels = None, None
    digest = hashlib.sha256(lp.read_bytes()).digest()
    return Records(
        "folder", str(r), [str(p.relative_to(r)) for p in kept],
        lambda i: Image.open(kept[i]), spec, labels,
        files_fingerprint(kept, r, extra=digest + repr(list(wanted or [])).encode()), notes,
    )
