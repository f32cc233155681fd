"""Dataset sources, chosen by ``data.source`` or detected from the path."""

from __future__ import annotations

import logging
from pathlib import Path

from facediff.config import DataConfig
from facediff.data.records import Records
from facediff.errors import DataError

log = logging.getLogger(__name__)

SOURCES = ("folder", "celeba", "hf", "utkface", "mnist")


def detect_source(path: str) -> str:
    """The source type a path looks like (CelebA layout, MNIST IDX, HF dataset, UTKFace)."""
    from facediff.data.sources.celeba import is_celeba
    from facediff.data.sources.hf import is_hf_local, looks_like_hub_name
    from facediff.data.sources.mnist import is_mnist
    from facediff.data.sources.utkface import is_utkface

    p = Path(path).expanduser()
    if not p.exists():
        if looks_like_hub_name(path):
            return "hf"
        raise DataError(f"data folder not found: {p}")
    if p.is_file():
        if p.suffix.lower() == ".parquet":
            return "hf"
        raise DataError(f"data path is not a folder: {p}")
    if is_celeba(p):
        return "celeba"
    if is_mnist(p):
        return "mnist"
    if is_hf_local(p):
        return "hf"
    if is_utkface(p):
        return "utkface"
    return "folder"


def load_records(cfg: DataConfig) -> Records:
    """Records for the dataset ``cfg`` points at, with ``cfg.conditions`` selected."""
    if not cfg.path:
        raise DataError("no data path: pass --data PATH (or set data.path)")
    kind = cfg.source if cfg.source != "auto" else detect_source(cfg.path)
    if cfg.labels and kind != "folder":
        raise DataError(f"data.labels is for image folders; {cfg.path} is a {kind} dataset")
    if kind == "folder":
        from facediff.data.sources.folder import folder_records
        from facediff.data.sources.labels import labeled_folder_records

        if cfg.labels:
            return labeled_folder_records(cfg.path, cfg.labels, cfg.conditions)
        if cfg.conditions:
            raise DataError("data.conditions needs labels: pass --labels FILE for a folder")
        records = folder_records(cfg.path)
    elif kind == "celeba":
        from facediff.data.sources.celeba import celeba_records

        records = celeba_records(cfg)
    elif kind == "hf":
        from facediff.data.sources.hf import hf_records

        return hf_records(cfg)
    elif kind == "utkface":
        from facediff.data.sources.utkface import utkface_records

        records = utkface_records(cfg)
    elif kind == "mnist":
        from facediff.data.sources.mnist import mnist_records

        records = mnist_records(cfg)
    else:  # pragma: no cover - the config only allows the names above
        raise DataError(f"unknown data source {kind!r}; choose from {', '.join(SOURCES)}")
    return select_conditions(records, cfg.conditions)


def select_conditions(records: Records, wanted: list[str] | None) -> Records:
    """None keeps every condition; an empty list keeps none (an unconditional model)."""
    if wanted is None:
        return records
    if not wanted:
        records.spec, records.labels = None, None
        records.fingerprint += "|none"
        return records
    if records.spec is None or records.labels is None:
        raise DataError(f"{records.root} has no labels to choose conditions from")
    from facediff.data.sources.labels import unknown_name_error

    names = records.spec.names
    lowered = {n.lower(): n for n in names}
    for w in wanted:
        if w not in names and w.lower() not in lowered:
            raise unknown_name_error(w, names)
    records.spec, records.labels = records.spec.select(wanted, records.labels)
    records.fingerprint += "|" + ",".join(wanted)
    return records
