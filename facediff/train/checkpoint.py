"""Every file a run writes: its config, checkpoints and exported models.

Run dir layout::

    RUN/config.yaml
    RUN/checkpoints/step-0001000/{config.yaml, model.safetensors, ema.safetensors, state.pt}
    RUN/model/{config.yaml, weights.safetensors}       exported EMA weights
    RUN/samples/step-0001000.png                      fixed-noise grids
    RUN/logs/                                         TensorBoard events and metrics.csv

A checkpoint is written into a hidden temporary folder, every file flushed and fsynced, and
the folder renamed into place (facediff.atomic): a crash mid-write leaves the previous
checkpoint as the latest.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from facediff.assets import ASSETS, resolve_model
from facediff.atomic import publish_dir, write_text
from facediff.config import Config
from facediff.errors import FacediffError, ModelNotFoundError

CKPT_DIR = "checkpoints"
EXPORT_DIR = "model"
_STEP_RE = re.compile(r"^step-(\d{7,})$")
CKPT_FILES = ("config.yaml", "model.safetensors", "ema.safetensors", "state.pt")
EXPORT_FILES = ("config.yaml", "weights.safetensors")


def _state_dict_cpu(sd: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict:
    out = {}
    for k, v in sd.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def save_config(path: str | Path, cfg: Config) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically (a run's ``config.yaml``)."""
    return write_text(path, cfg.to_yaml())


# ---- checkpoints ------------------------------------------------------------------------

def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary and partial folders ignored)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and all((p / f).is_file() for f in CKPT_FILES):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    cfg: Config,
    *,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / "config.yaml").write_text(cfg.to_yaml())
    save_file(_state_dict_cpu(model_state), str(tmp / "model.safetensors"))
    save_file(_state_dict_cpu(ema_state), str(tmp / "ema.safetensors"))
    torch.save(train_state, tmp / "state.pt")
    publish_dir(tmp, final)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a crash in an earlier run
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint folder: config, model and EMA weights, training state."""
    p = Path(path)
    return {
        "config": Config.load(p / "config.yaml"),
        "model": load_file(str(p / "model.safetensors")),
        "ema": load_file(str(p / "ema.safetensors")),
        "state": torch.load(p / "state.pt", map_location="cpu", weights_only=True),
    }


# ---- exported models --------------------------------------------------------------------

def export_model(
    out_dir: str | Path, cfg: Config, ema_state: dict[str, torch.Tensor], *,
    dtype: torch.dtype | None = None, step: int | None = None,
) -> Path:
    """Write an exported model (config.yaml + weights.safetensors), atomically."""
    out = Path(out_dir)
    if out.exists() and not is_exported_model(out) and (not out.is_dir() or any(out.iterdir())):
        raise FacediffError(
            f"refusing to export into {out}: it exists and is not an exported model "
            "(choose a new or empty folder)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / "config.yaml").write_text(cfg.to_yaml())
    save_file(_state_dict_cpu(ema_state, dtype), str(tmp / "weights.safetensors"),
              metadata={"format": "pt", "facediff": "ema", "step": str(step or 0)})
    publish_dir(tmp, out)
    return out


def is_exported_model(path: Path) -> bool:
    return all((path / f).is_file() for f in EXPORT_FILES)


def read_model(path: str | Path | None, conditional: bool = False,
               ) -> tuple[Config, dict[str, torch.Tensor], str]:
    """Config and EMA weights from an exported model dir, a run dir or a bundled model's name
    (None: a bundled model, the attribute one if ``conditional``; see facediff.assets).

    A run dir gives its export if it has one, else its latest checkpoint's EMA weights.
    Returns (config, weights, description of where they came from).
    """
    p = resolve_model(path, conditional)
    if is_exported_model(p):
        source = f"bundled {p.name}" if p.parent == ASSETS else str(p)
        return Config.load(p / "config.yaml"), load_file(str(p / "weights.safetensors")), source
    ckpt = latest_checkpoint(p)
    export = p / EXPORT_DIR
    if is_exported_model(export):
        export_step = exported_step(export)
        if ckpt is None or export_step is None or export_step >= list_checkpoints(p)[-1][0]:
            return (Config.load(export / "config.yaml"),
                    load_file(str(export / "weights.safetensors")), str(export))
    if ckpt is not None:
        return Config.load(ckpt / "config.yaml"), load_file(str(ckpt / "ema.safetensors")), \
            str(ckpt)
    raise ModelNotFoundError(
        f"no model in {p}: expected config.yaml + weights.safetensors, or a run dir "
        f"with {EXPORT_DIR}/ or {CKPT_DIR}/step-*/"
    )


def exported_step(export: Path) -> int | None:
    """The training step an exported model dir was written at (None: not recorded)."""
    try:
        with safe_open(str(export / "weights.safetensors"), framework="pt") as f:
            return int((f.metadata() or {}).get("step", ""))
    except (OSError, ValueError):
        return None
