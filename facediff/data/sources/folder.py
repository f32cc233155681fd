"""Image-folder source: every jpg/png/webp/bmp under a folder (the Kaggle Simpsons layout),
optionally with a labels file (see labels.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from facediff.data.records import Records
from facediff.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def data_root(path: str | None) -> Path:
    """The dataset folder ``data.path`` names; missing or not a folder is one clear error."""
    if not path:
        raise DataError("no data path: pass --data PATH (or set data.path)")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    return root


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted). A missing or empty folder is an error."""
    r = Path(root)
    if not r.exists():
        raise DataError(f"data folder not found: {r}")
    if not r.is_dir():
        raise DataError(f"data path is not a folder: {r}")
    files = sorted(
        p for p in r.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"no images in {r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def files_fingerprint(files: list[Path], root: Path, extra: bytes = b"") -> str:
    """A key that changes when any file is added, removed, resized or rewritten."""
    h = hashlib.sha256(extra)
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def folder_records(root: str | Path, files: list[Path] | None = None) -> Records:
    r = Path(root)
    files = files if files is not None else find_images(r)
    keys = [str(p.relative_to(r)) for p in files]
    return Records("folder", str(r), keys, lambda i: Image.open(files[i]),
                   fingerprint=files_fingerprint(files, r))
