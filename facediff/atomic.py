"""Atomic writes: a file or folder appears whole or not at all.

Each write goes to a hidden temporary name in the destination's folder, is flushed and
fsynced, and is renamed into place (``os.replace`` is atomic on one filesystem); the folder is
fsynced after the rename. A crash or a full disk mid-write leaves the previous version, and a
failed write removes its temporary file. Used by checkpoints and exports, the image cache,
reference features and saved configs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where folders cannot be
    opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def temp_path(path: Path) -> Path:
    """The hidden temporary name a write to ``path`` by this process uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:  # a failed write (a full disk) must not leave the disk fuller
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    return write_with(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_dir():
            _fsync_tree(f)
        else:
            fsync_file(f)
    fsync_dir(folder)


def publish_dir(tmp: Path, final: Path) -> None:
    """Fsync every file in the folder ``tmp`` (and its subfolders) and rename it to ``final``
    (replacing an older one, which is removed only once the new one is in place)."""
    _fsync_tree(tmp)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:  # put the previous one back
            os.replace(old, final)
        raise
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
