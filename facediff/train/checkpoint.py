"""Every file a run writes: its config, checkpoints and exported models, and reading them back.

Run dir layout::

    RUN/config.yaml
    RUN/checkpoints/step-0001000/{config.yaml, model.safetensors, ema.safetensors, state.pt}
    RUN/model/{config.yaml, weights.safetensors}       exported EMA weights
    RUN/samples/step-0001000.png                      fixed-noise grids
    RUN/logs/                                         TensorBoard events and metrics.csv
    RUN/.lock                                         held by the trainer (facediff.train.lock)

Writes: a checkpoint or export is written into a hidden temporary folder, every file flushed
and fsynced, and the folder renamed into place (facediff.atomic): a crash mid-write leaves the
previous one as the latest. Weights with NaN or inf are never written (``NonFiniteError``). A
failed write (no space, read-only, permission) removes its temporary folder and is one line
(``WriteError``); the run resumes with the same command once the cause is fixed.

Reads verify what they read (the safetensors header and sizes, ``state.pt``, finite weights):
resume takes the newest checkpoint that loads and a run dir's model falls back from a broken
export to its checkpoints, saying what was skipped and why (``CorruptError`` when nothing
loads).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from facediff.assets import ASSETS, resolve_model
from facediff.atomic import publish_dir, write_text
from facediff.config import Config
from facediff.errors import FacediffError, ModelNotFoundError

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
EXPORT_DIR = "model"
_STEP_RE = re.compile(r"^step-(\d{7,})$")
# what interrupted writes of a run leave (nothing else in a folder matches: `--out` may name
# a folder that holds other things): temporary checkpoint/export folders and config files,
# and a previous export or checkpoint being replaced (facediff.atomic)
_EXPORTS = r"(model|best|best-fid)"
_TMP_RE = re.compile(rf"^\.(tmp-{_EXPORTS}-\d+|config\.yaml\.\d+\.tmp|"
                     r"tmp-step-\d{7,}-\d+)$")
_OLD_RE = re.compile(rf"^\.({_EXPORTS}|step-\d{{7,}})\.old-\d+$")
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


class WriteError(FacediffError, OSError):
    """A file of the run could not be written: no space, a read-only place, no permission."""


class CorruptError(FacediffError):
    """A checkpoint or exported model that cannot be read back."""


class ReadError(FacediffError):
    """A file that exists but cannot be read right now (I/O error, permission): one line; a
    checkpoint is not skipped for it (it may be good)."""


class NonFiniteError(FacediffError):
    """Weights with NaN or inf values: the run diverged; they are never written."""


# what a failed write raises: OSError (no space, read-only), torch.save's RuntimeError
# ("unexpected pos" on a full disk) and safetensors' own error
_WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` that hold a NaN or an inf."""
    return [k for k, v in state.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    bad = non_finite(state)
    if bad:
        raise NonFiniteError(f"{what} has NaN or inf values in {len(bad)} of {len(state)} "
                             f"tensors (first: {bad[0]}); not written")


@contextmanager
def _writing(tmp: Path, final: Path, what: str) -> Iterator[Path]:
    """Write a folder at ``tmp`` and publish it as ``final``; any failure removes ``tmp`` and
    is one ``WriteError`` line naming ``final`` and the cause."""
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        yield tmp
        publish_dir(tmp, final)
    except BaseException as e:  # a signal too: never leave the temporary folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, _WRITE_ERRORS):
            raise
        reason = _reason(e)
        if not isinstance(e, OSError) and _nearly_full(final.parent):
            # torch.save on a full disk says only "unexpected pos": name the cause
            reason = f"No space left on device ({reason})"
        raise WriteError(f"cannot write {what} {final}: {reason}") from e


def save_config(path: str | Path, cfg: Config) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically (a run's ``config.yaml``)."""
    try:
        return write_text(path, cfg.to_yaml())
    except OSError as e:
        raise WriteError(f"cannot write {path}: {_reason(e)}") from e


def clean_stale(run_dir: str | Path) -> list[Path]:
    """Remove what interrupted writes left in a run dir (temporary checkpoint and export
    folders, temporary files, the previous copy of an export that was being replaced; an
    export whose replacement never arrived is restored). Only safe while the run's lock is
    held. Returns what was removed."""
    run = Path(run_dir)
    removed: list[Path] = []
    for root in (run, run / CKPT_DIR):
        if not root.is_dir():
            continue
        for p in root.glob(".*"):
            old = _OLD_RE.match(p.name)
            if old and not (root / old.group(1)).exists():
                os.replace(p, root / old.group(1))  # the new copy never arrived: restore
                log.warning("restored %s from an interrupted replacement", root / old.group(1))
                continue
            if old or _TMP_RE.match(p.name):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


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
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``.

    Non-finite weights raise ``NonFiniteError`` before anything is written, so rotation never
    removes the last good checkpoint for a diverged one; a failed write raises ``WriteError``.
    """
    _check_finite(model_state, f"the model at step {step}")
    _check_finite(ema_state, f"the EMA at step {step}")
    root = Path(run_dir) / CKPT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    model_cpu, ema_cpu = _state_dict_cpu(model_state), _state_dict_cpu(ema_state)
    with _writing(tmp, final, "checkpoint"):  # only writes inside: its errors are writes'
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        save_file(model_cpu, str(tmp / "model.safetensors"))
        save_file(ema_cpu, str(tmp / "ema.safetensors"))
        torch.save(train_state, tmp / "state.pt")
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a crash in an earlier run (the lock is ours)
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, verified: its header and sizes (safetensors), finite values."""
    try:
        weights = load_file(str(path))
    except SafetensorError as e:  # its header or sizes are wrong: the file is damaged
        raise CorruptError(f"cannot read {path}: {_reason(e)}") from None
    except OSError as e:  # the file is there but cannot be read now: not a reason to skip it
        raise ReadError(f"cannot read {path}: {_reason(e)}") from None
    bad = non_finite(weights)
    if bad:
        raise CorruptError(f"{path} holds NaN or inf values ({len(bad)} tensors, first: "
                           f"{bad[0]}): written by a run that diverged")
    return weights


def _read_config(path: Path) -> Config:
    try:
        return Config.load(path)
    except FacediffError as e:
        raise CorruptError(str(e)) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint folder: config, model and EMA weights, training state
    (``CorruptError`` naming the file that does not load)."""
    p = Path(path)
    try:
        state = torch.load(p / "state.pt", map_location="cpu", weights_only=True)
    except OSError as e:
        raise ReadError(f"cannot read {p / 'state.pt'}: {_reason(e)}") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        # a truncated zip, a bad pickle, a payload weights_only refuses
        raise CorruptError(f"cannot read {p / 'state.pt'}: {_reason(e)}") from None
    return {
        "config": _read_config(p / "config.yaml"),
        "model": _read_weights(p / "model.safetensors"),
        "ema": _read_weights(p / "ema.safetensors"),
        "state": state,
    }


def load_latest_checkpoint(run_dir: str | Path, *, quarantine: bool = False,
                           ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that loads (None: the run has none yet). Each newer one
    that is damaged is skipped with a warning saying why (with ``quarantine``, the trainer's,
    which holds the run's lock: moved aside to ``checkpoints/.corrupt-step-N``, so it neither
    counts as a checkpoint nor is written over); if none loads, CorruptError. A file that
    cannot be read for another reason (I/O, permission) is a ReadError, not a skip."""
    skipped = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            loaded = load_checkpoint(path)
        except CorruptError as e:
            log.warning("skipping checkpoint %s: %s", path.name, e)
            skipped.append(f"{path.name}: {e}")
            if quarantine:
                os.replace(path, path.with_name(f".corrupt-{path.name}"))
            continue
        return path, loaded
    if skipped:
        raise CorruptError(f"no checkpoint of {run_dir} can be read ({'; '.join(skipped)})")
    return None


# ---- exported models --------------------------------------------------------------------

def export_model(
    out_dir: str | Path, cfg: Config, ema_state: dict[str, torch.Tensor], *,
    dtype: torch.dtype | None = None, step: int | None = None,
) -> Path:
    """Write an exported model (config.yaml + weights.safetensors), atomically (non-finite
    weights: ``NonFiniteError``, nothing written; a failed write: ``WriteError``)."""
    out = Path(out_dir)
    if out.exists() and not is_exported_model(out) and (not out.is_dir() or any(out.iterdir())):
        raise FacediffError(
            f"refusing to export into {out}: it exists and is not an exported model "
            "(choose a new or empty folder)"
        )
    _check_finite(ema_state, f"the model for {out}")
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    weights = _state_dict_cpu(ema_state, dtype)
    with _writing(tmp, out, "exported model"):
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        meta = {"format": "pt", "facediff": "ema"}
        if step is not None:  # unknown: not recorded, rather than a false 0
            meta["step"] = str(step)
        save_file(weights, str(tmp / "weights.safetensors"), metadata=meta)
    return out


def is_exported_model(path: Path) -> bool:
    return all((path / f).is_file() for f in EXPORT_FILES)


def read_model(path: str | Path | None, conditional: bool = False,
               ) -> tuple[Config, dict[str, torch.Tensor], str]:
    """Config and EMA weights from an exported model dir, a run dir or a bundled model's name
    (None: a bundled model, the attribute one if ``conditional``; see facediff.assets).

    A run dir gives the newest of its export and its checkpoints that loads (a broken one is
    skipped with a warning). Returns (config, weights, description of where they came from).
    """
    p = resolve_model(path, conditional)
    from facediff.hub.pipelines import FACEDIFF_DIR, is_pipeline, read_pipeline

    if not is_exported_model(p) and is_pipeline(p):  # a diffusers pipeline folder
        if is_exported_model(p / FACEDIFF_DIR):  # with facediff's own export (`facediff push`)
            p = p / FACEDIFF_DIR
        else:
            return read_pipeline(p)
    if is_exported_model(p):
        source = f"bundled {p.name}" if p.parent == ASSETS else str(p)
        return _read_config(p / "config.yaml"), _read_weights(p / "weights.safetensors"), source
    candidates = [(step, ckpt, "ema.safetensors") for step, ckpt in list_checkpoints(p)]
    export = p / EXPORT_DIR
    if is_exported_model(export):  # on a tie the export wins: it is what the run handed over
        step = exported_step(export)  # not recorded: the export is taken as the newest
        candidates.append((step if step is not None else float("inf"), export,
                           "weights.safetensors"))
        candidates.sort(key=lambda c: (c[0], c[1] == export))
    if not candidates:
        raise ModelNotFoundError(
            f"no model in {p}: expected config.yaml + weights.safetensors, or a run dir "
            f"with {EXPORT_DIR}/ or {CKPT_DIR}/step-*/"
        )
    skipped = []
    for _, where, weights in reversed(candidates):
        try:
            cfg, w = _read_config(where / "config.yaml"), _read_weights(where / weights)
        except CorruptError as e:
            log.warning("skipping %s: %s", where, e)
            skipped.append(str(e))
            continue
        return cfg, w, str(where)
    raise CorruptError(f"no model in {p} can be read ({'; '.join(skipped)})")


def source_step(path: str | Path | None, source: str, conditional: bool = False) -> int | None:
    """The training step of the weights ``read_model(path, conditional)`` read, given the
    ``source`` it described them with (None: not recorded)."""
    where = resolve_model(path, conditional) if source.startswith("bundled ") else Path(source)
    return model_step(where)


def model_step(where: Path) -> int | None:
    """The training step of a model folder (an export's recorded step, a checkpoint's from
    its name; None: not known)."""
    if is_exported_model(where):
        return exported_step(where)
    m = _STEP_RE.match(where.name)
    return int(m.group(1)) if m else None


def exported_step(export: Path) -> int | None:
    """The training step an exported model dir was written at (None: not recorded)."""
    try:
        with safe_open(str(export / "weights.safetensors"), framework="pt") as f:
            return int((f.metadata() or {}).get("step", ""))
    except (OSError, ValueError, SafetensorError):
        return None
