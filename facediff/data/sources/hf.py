"""Hugging Face ``datasets`` source: a hub name, a ``save_to_disk`` folder or parquet file(s).

Images are read one row at a time (the image column is cast to ``Image(decode=False)`` and
opened here with PIL), so nothing is decoded up front and an unreadable row is an ``OSError``
that ``decode_records`` counts and skips. Label columns become conditions:

* ``ClassLabel``: categorical, with the ClassLabel's names (two names stay categorical);
* ``bool``: binary;
* an int column whose values are all in {0, 1} (or {-1, 1}, -1 = off): binary;
* a string column with at most 100 distinct values: categorical, values sorted.

Missing values are UNSPECIFIED (-1). ``datasets`` is imported only when this source is used.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from facediff.data.conditions import UNSPECIFIED, Condition, ConditionSpec
from facediff.data.records import Records
from facediff.errors import DataError

if TYPE_CHECKING:
    from facediff.config import DataConfig

log = logging.getLogger(__name__)

MAX_STRING_VALUES = 100
_PARQUET_DEPTH = 3  # data/train-*.parquet, default/train/0000.parquet, ...
_HUB_PREFIXES = ("hf://datasets/", "hf://")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}(?::[\w.-]+)?$")
_SPLIT_WORDS = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}
_SPLIT_RE = re.compile(r"^([A-Za-z]+)(?:$|[-_.\d])")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise DataError(
            "reading Hugging Face datasets needs the datasets package: pip install datasets"
        ) from e
    return datasets


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---------------------------------------------------------------------------- detection


def _parquet_files(root: Path) -> list[Path]:
    """Parquet files in ``root`` and up to a few folders below (hidden ones skipped)."""
    found: list[Path] = []
    for depth in range(_PARQUET_DEPTH):
        pattern = "/".join(["*"] * depth + ["*.parquet"])
        found += [p for p in root.glob(pattern)
                  if p.is_file() and not any(part.startswith(".")
                                             for part in p.relative_to(root).parts)]
    return sorted(found)


def is_hf_local(path: Path) -> bool:
    """True for a ``save_to_disk`` folder, a parquet file or a folder holding parquet files."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".parquet"
    if not p.is_dir():
        return False
    if (p / "dataset_dict.json").is_file():
        return True
    if (p / "dataset_info.json").is_file() and (p / "state.json").is_file():
        return True
    return bool(_parquet_files(p))


def _strip_hub_prefix(text: str) -> str:
    for prefix in _HUB_PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def looks_like_hub_name(text: str) -> bool:
    """``owner/name`` (optionally ``owner/name:config``) that is not an existing local path."""
    if not text or Path(text).expanduser().exists():
        return False
    return bool(_HUB_NAME.match(_strip_hub_prefix(text.strip())))


# ---------------------------------------------------------------------------- loading


def _choose_split(splits: list[str], wanted: str | None, where: str,
                  notes: list[str]) -> str:
    if wanted is not None:
        if wanted not in splits:
            raise DataError(f"unknown split {wanted!r} in {where}; splits: {', '.join(splits)}")
        return wanted
    if "train" in splits:
        chosen = "train"
    elif len(splits) == 1:
        chosen = splits[0]
    else:
        raise DataError(f"{where} has no 'train' split; set data.split to one of: "
                        f"{', '.join(splits)}")
    if len(splits) > 1:
        notes.append(f"split {chosen!r} of {', '.join(splits)}")
    return chosen


def _load_disk(path: Path, split: str | None, notes: list[str]) -> tuple[Any, str]:
    datasets = _datasets()
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"cannot read Hugging Face dataset {path}: {_one_line(e)}") from e
    if isinstance(obj, datasets.DatasetDict):
        name = _choose_split(list(obj.keys()), split, str(path), notes)
        return obj[name], name
    own = str(obj.split) if getattr(obj, "split", None) else None
    if own is None and (path.parent / "dataset_dict.json").is_file():
        own = path.name  # one split's folder of a saved DatasetDict
    if split is not None and own is not None and split != own:
        raise DataError(f"unknown split {split!r} in {path}; splits: {own}")
    if own is None and split is not None:
        notes.append(f"{path} has no named splits; all its rows are called {split!r}")
    return obj, own or split or "train"


def _split_of(file: Path, root: Path) -> str | None:
    """The split a parquet file belongs to, from its name or its folders (hub layouts)."""
    parts = [file.stem, *reversed(file.relative_to(root).parts[:-1])]
    for part in parts:
        m = _SPLIT_RE.match(part)
        if m and m.group(1).lower() in _SPLIT_WORDS:
            return _SPLIT_WORDS[m.group(1).lower()]
    return None


def _parquet_splits(path: Path, notes: list[str]) -> dict[str, list[Path]]:
    files = [path] if path.is_file() else _parquet_files(path)
    if not files:
        raise DataError(f"no parquet files in {path}")
    root = path.parent if path.is_file() else path
    by_split: dict[str, list[Path]] = {}
    unmatched: list[Path] = []
    for f in files:
        s = _split_of(f, root)
        (by_split.setdefault(s, []) if s else unmatched).append(f)
    if not by_split:
        return {"train": files}
    if unmatched:
        notes.append(f"ignored {len(unmatched)} parquet files not named after a split "
                     f"(first: {unmatched[0].relative_to(root)})")
    return by_split


def _load_parquet(path: Path, split: str | None, notes: list[str]) -> tuple[Any, str]:
    datasets = _datasets()
    by_split = _parquet_splits(path, notes)
    name = _choose_split(sorted(by_split), split, str(path), notes)
    files = [str(f) for f in by_split[name]]
    try:
        ds = datasets.load_dataset("parquet", data_files={name: files}, split=name)
    except Exception as e:
        raise DataError(f"cannot read parquet dataset {path}: {_one_line(e)}") from e
    return ds, name


def _load_hub(text: str, split: str | None, notes: list[str]) -> tuple[Any, str]:
    datasets = _datasets()
    name, _, config = _strip_hub_prefix(text.strip()).partition(":")
    config = config or None
    where = name + (f":{config}" if config else "")

    def fail(e: BaseException) -> DataError:
        return DataError(f"could not load Hugging Face dataset {where!r} (not a local path "
                         f"either): {_one_line(e)}")

    def load(split_arg: str | None) -> Any:
        return datasets.load_dataset(name, config, split=split_arg)

    try:
        try:
            ds = load(split or "train")
        except ValueError as e:
            if "Config name is missing" in str(e) and config is None:
                configs = list(datasets.get_dataset_config_names(name))
                config = configs[0]
                where = f"{name}:{config}"
                notes.append(f"config {config!r} of {', '.join(configs)} "
                             f"(pick one with {name}:<config>)")
                log.warning("%s has several configs (%s); using %r", name,
                            ", ".join(configs), config)
                ds = load(split or "train")
            else:
                raise
    except ValueError as e:
        if "Unknown split" not in str(e):
            raise fail(e) from e
        if split is not None:
            raise DataError(f"unknown split {split!r} in {where}: {_one_line(e)}") from e
        try:  # no "train" split: the data is downloaded already; see which splits exist
            splits = list(load(None).keys())
            chosen = _choose_split(splits, None, where, notes)
            return load(chosen), chosen
        except DataError:
            raise
        except Exception as e2:
            raise fail(e2) from e2
    except DataError:
        raise
    except Exception as e:
        raise fail(e) from e
    return ds, split or "train"


# ---------------------------------------------------------------------------- columns


def _type_name(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    name = type(feature).__name__
    return dtype if name == "Value" and dtype else name


def _find_image_column(ds: Any, wanted: str | None, where: str) -> str:
    datasets = _datasets()
    features = ds.features
    if wanted is not None:
        if wanted not in features:
            raise DataError(f"image column {wanted!r} not in {where}; columns: "
                            f"{', '.join(features)}")
        f = features[wanted]
        ok = isinstance(f, datasets.Image) or _type_name(f) in (
            "string", "large_string", "binary", "large_binary")
        if not ok:
            raise DataError(f"column {wanted!r} in {where} holds {_type_name(f)}, "
                            "not images (need an Image, binary or path column)")
        return wanted
    for col, f in features.items():
        if isinstance(f, datasets.Image):
            return col
    listing = ", ".join(f"{c} ({_type_name(f)})" for c, f in features.items())
    raise DataError(f"no image column in {where}; columns: {listing}; set data.image_column")


def _column(ds: Any, col: str) -> Any:
    import pyarrow as pa

    arr = ds.with_format("arrow")[col]
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def _to_codes(arr: Any) -> np.ndarray:
    import pyarrow.compute as pc

    return np.array(pc.fill_null(arr, UNSPECIFIED).to_numpy(zero_copy_only=False),
                    dtype=np.int64)


def _analyse(ds: Any, col: str) -> tuple[Condition | None, np.ndarray | None, str]:
    """A column's condition and codes (int64, UNSPECIFIED = unknown), or None and why it
    cannot be one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    datasets = _datasets()
    f = ds.features[col]
    tname = _type_name(f)
    if isinstance(f, datasets.ClassLabel):
        names = [str(n) for n in f.names]
        codes = _to_codes(_column(ds, col))
        codes[(codes < 0) | (codes >= len(names))] = UNSPECIFIED
        return Condition(col, "categorical", names), codes, ""
    if tname == "bool":
        codes = _to_codes(pc.cast(_column(ds, col), pa.int8()))
        return Condition(col), codes, ""
    if tname.startswith(("int", "uint")):
        arr = _column(ds, col)
        seen = {v for v in pc.unique(arr).to_pylist() if v is not None}
        if not seen:
            return None, None, "int column with no values"
        if seen <= {0, 1}:
            return Condition(col), _to_codes(arr), ""
        if seen <= {-1, 1}:
            codes = _to_codes(arr)  # -1 is "off" here, so read nulls separately
            valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            on = (codes == 1).astype(np.int64)
            return Condition(col), np.where(valid, on, UNSPECIFIED), ""
        return None, None, "int column with values other than 0/1 (or -1/1)"
    if tname in ("string", "large_string"):
        arr = _column(ds, col)
        values = sorted(v for v in pc.unique(arr).to_pylist() if v not in (None, ""))
        if not values:
            return None, None, "string column with no values"
        if len(values) > MAX_STRING_VALUES:
            return None, None, (f"string column with {len(values)} distinct values "
                                f"(more than {MAX_STRING_VALUES})")
        idx = pc.index_in(arr, value_set=pa.array(values, type=arr.type))
        return Condition(col, "categorical", values), _to_codes(idx), ""
    return None, None, f"{tname} column"


def _conditions(ds: Any, image_col: str, wanted: list[str] | None, where: str,
                notes: list[str]) -> tuple[ConditionSpec | None, np.ndarray | None]:
    columns = [c for c in ds.features if c != image_col]
    found: dict[str, tuple[Condition | None, np.ndarray | None, str]] = {}

    def get(col: str) -> tuple[Condition | None, np.ndarray | None, str]:
        if col not in found:
            found[col] = _analyse(ds, col)
        return found[col]

    if wanted is None:
        chosen = [c for c in columns if get(c)[0] is not None]
        skipped = [f"{c} ({found[c][2]})" for c in columns if found[c][0] is None]
        if skipped:
            notes.append("columns not used as conditions: " + "; ".join(skipped))
    else:
        chosen = []
        for name in wanted:
            col = name if name in columns else next(
                (c for c in columns if c.lower() == name.lower()), None)
            if col is None:
                usable = [c for c in columns if get(c)[0] is not None]
                close = difflib.get_close_matches(name, usable or columns, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                why = " is the image column" if name == image_col else " not found"
                raise DataError(f"condition column {name!r}{why} in {where}{hint}; usable: "
                                f"{', '.join(usable) or 'none'}")
            cond, _, why = get(col)
            if cond is None:
                raise DataError(f"column {col!r} in {where} cannot be a condition: {why}")
            if col not in chosen:
                chosen.append(col)
    if not chosen:
        return None, None
    spec = ConditionSpec([found[c][0] for c in chosen])
    labels = np.stack([found[c][1] for c in chosen], axis=1).astype(np.int16)
    return spec, labels


# ---------------------------------------------------------------------------- images


def _image_opener(ds: Any, col: str, root: Path | None) -> Callable[[int], Image.Image]:
    datasets = _datasets()
    feature = ds.features[col]
    view = ds.select_columns([col])
    is_image = isinstance(feature, datasets.Image)
    if is_image:
        view = view.cast_column(col, datasets.Image(decode=False))

    def from_path(path: str, value: Any) -> Image.Image:
        p = Path(path).expanduser()
        if p.is_file():
            return Image.open(p)
        if root is not None and not p.is_absolute() and (root / p).is_file():
            return Image.open(root / p)
        if not is_image:
            raise FileNotFoundError(f"image file not found: {path}")
        try:  # remote or archived (zip://...::...) paths: let datasets fetch them
            return datasets.Image().decode_example(value)
        except OSError:
            raise
        except Exception as e:
            raise OSError(_one_line(e)) from e

    def open_image(i: int) -> Image.Image:
        value = view[i][col]
        if value is None:
            raise OSError("no image in this row")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(bytes(value)))
        if isinstance(value, str):
            return from_path(value, {"path": value, "bytes": None})
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return from_path(value["path"], value)
        raise OSError("no image in this row")

    return open_image


def _fingerprint(ds: Any, parts: list[str]) -> str:
    h = hashlib.sha256(str(getattr(ds, "_fingerprint", "")).encode())
    for cf in getattr(ds, "cache_files", None) or []:
        name = cf.get("filename", "")
        try:
            st = os.stat(name)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\n".encode())
    h.update("\0".join(parts).encode())
    return h.hexdigest()


def hf_records(cfg: DataConfig) -> Records:
    """Records for a Hugging Face dataset named by ``cfg.path`` (a ``DataConfig``).

    ``cfg.path`` is a ``save_to_disk`` folder, a parquet file or folder, or a hub name
    (``owner/name`` or ``owner/name:config``); ``cfg.split`` picks the split (default train),
    ``cfg.image_column`` the image column (default: the first Image column) and
    ``cfg.conditions`` the label columns (default: every usable one).
    """
    if not cfg.path:
        raise DataError("data.path is not set")
    text = str(cfg.path)
    path = Path(text).expanduser()
    notes: list[str] = []
    root: Path | None = None
    if path.exists():
        if path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file()):
            ds, split = _load_disk(path, cfg.split, notes)
            root = path
        elif is_hf_local(path):
            ds, split = _load_parquet(path, cfg.split, notes)
            root = path.parent if path.is_file() else path
        else:
            raise DataError(f"{path} is not a Hugging Face dataset (no save_to_disk files "
                            "or parquet files)")
        where = str(path)
    elif looks_like_hub_name(text):
        ds, split = _load_hub(text, cfg.split, notes)
        where = _strip_hub_prefix(text.strip())
    else:
        raise DataError(f"data path not found: {path}")

    if len(ds) == 0:
        raise DataError(f"split {split!r} of {where} has no rows")
    image_col = _find_image_column(ds, cfg.image_column, where)
    wanted = list(cfg.conditions) if cfg.conditions is not None else None
    spec, labels = _conditions(ds, image_col, wanted, where, notes)
    keys = [f"{split}/{i:06d}" for i in range(len(ds))]
    fingerprint = _fingerprint(ds, [where, split, image_col, *(spec.names if spec else [])])
    return Records("hf", where, keys, _image_opener(ds, image_col, root), spec=spec,
                   labels=labels, fingerprint=fingerprint, notes=notes)
