"""Figures of a training run: the fixed-noise sample grids over time, and the loss curves.

Reads only what the trainer writes: ``RUN/samples/step-XXXXXXX.png`` (the same noise, seed
``SAMPLE_SEED``, at every step), ``RUN/logs/metrics.csv`` and ``RUN/config.yaml``.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.config import Config
from facediff.errors import FacediffError
from facediff.train.trainer import CSV_FIELDS, SAMPLE_SEED
from facediff.viz.animation import upscale, with_band
from facediff.viz.plotting import pyplot
from facediff.viz.process import spread

_GRID = re.compile(r"step-(\d+)\.png$")



def _run_dir(run: str | Path) -> Path:
    p = Path(run).expanduser()
    if not p.is_dir():
        raise FacediffError(f"run dir not found: {p}")
    return p


def _run_config(run: Path) -> Config | None:
    path = run / "config.yaml"
    return Config.load(path) if path.is_file() else None


def _images(n: int) -> str:
    """12,800 -> '12.8k images'."""
    if n >= 1_000_000:
        return f"{n / 1e6:.3g}M images"
    if n >= 1000:
        return f"{n / 1e3:.3g}k images"
    return f"{n} images"


# ---- progress -----------------------------------------------------------------------------

@dataclass
class SampleGrid:
    step: int
    path: Path
    images_seen: int | None  # step x batch size, when the run's config is known

    def label(self) -> str:
        seen = f", {_images(self.images_seen)}" if self.images_seen is not None else ""
        return f"step {self.step}{seen}"


def sample_grids(run: str | Path) -> list[SampleGrid]:
    """The run's sample grids in step order; an error if it has none."""
    run = _run_dir(run)
    cfg = _run_config(run)
    batch = cfg.train.batch_size if cfg else None
    found = sorted((int(m.group(1)), p) for p in (run / "samples").glob("step-*.png")
                   if (m := _GRID.search(p.name)))
    if not found:
        raise FacediffError(f"no sample grids in {run / 'samples'}: the trainer writes one "
                            "every train.sample_every steps (e.g. --set train.sample_every=500)")
    return [SampleGrid(s, p, s * batch if batch else None) for s, p in found]


def _progress_title(run: Path) -> str:
    cfg = _run_config(run)
    how = f"{cfg.sample.sampler}, {cfg.sample.steps} steps, " if cfg else ""
    return f"Training progress of {run.name}: fixed noise ({how}seed {SAMPLE_SEED})"


def progress_figure(run: str | Path, path: str | Path, max_frames: int = 8) -> Path:
    """The selected sample grids (evenly spread, first and last always), each labelled."""
    plt = pyplot()
    run = _run_dir(run)
    grids = sample_grids(run)
    picks = [grids[k] for k in spread(max_frames, len(grids))]
    ncol = min(4, len(picks))
    nrow = math.ceil(len(picks) / ncol)
    with Image.open(picks[0].path) as im:
        aspect = im.height / im.width
    panel = 2.4
    fig, axes = plt.subplots(nrow, ncol, squeeze=False, layout="constrained", dpi=100,
                             figsize=(ncol * panel, nrow * (panel * aspect + 0.35) + 0.5))
    for ax in axes.flat:
        ax.axis("off")
    for ax, g in zip(axes.flat, picks, strict=False):
        with Image.open(g.path) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_title(g.label(), fontsize=10)
    fig.suptitle(_progress_title(run), fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def progress_frames(run: str | Path, cell: int = 256) -> tuple[list[Image.Image], list[int]]:
    """Every sample grid in order with its step above; the last one held."""
    grids = sample_grids(run)
    frames = []
    for g in grids:
        with Image.open(g.path) as im:
            frames.append(with_band(upscale(im.convert("RGB"), cell), [g.label()]))
    durations = [400] * len(frames)
    durations[-1] = 2000
    return frames, durations


# ---- loss curves --------------------------------------------------------------------------

def _resumed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The trainer appends to metrics.csv: a run that resumes from a checkpoint older than its
    last rows (a crash between checkpoints) logs those steps again. A row whose step is not
    past the one before starts such a resumed part; the earlier rows from its step on are
    the lost ones and are dropped."""
    out: list[dict[str, str]] = []
    for row in rows:
        try:
            step = int(row["step"])
        except (KeyError, TypeError, ValueError):
            continue
        while out and int(out[-1]["step"]) >= step:
            out.pop()
        out.append(row)
    return out


def read_metrics(run: str | Path) -> dict[str, np.ndarray]:
    """``RUN/logs/metrics.csv`` as float columns (NaN where a value was not logged)."""
    run = _run_dir(run)
    path = run / "logs" / "metrics.csv"
    if not path.is_file():
        raise FacediffError(f"no training metrics in {run}: expected {path} "
                            "(written by facediff train)")
    with open(path, newline="") as f:
        rows = _resumed(list(csv.DictReader(f)))
    if not rows:
        raise FacediffError(f"{path} has no rows yet: the trainer logs every "
                            "train.log_every steps")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    cols = list(dict.fromkeys([*CSV_FIELDS, *rows[0].keys()]))
    return {c: np.array([num(r.get(c)) for r in rows]) for c in cols}


def smoothed(values: np.ndarray, smooth: float, log: bool = False) -> np.ndarray:
    """A centred smoothing of a logged curve that neither lags nor flattens the ends: at each
    point a weighted quadratic fit to its neighbours (local regression), Gaussian weights with
    a width of sqrt(smooth) / (1 - smooth) points (the spread of TensorBoard's EMA of the same
    ``smooth``: 0 none, 0.9 about 10 points, 0.99 about 100), at most a tenth of the curve.
    ``log``: fit log(values). NaNs are skipped and stay NaN."""
    out = np.full(len(values), math.nan)
    keep = ~np.isnan(values)
    y = np.log(values[keep]) if log else values[keep]
    if smooth <= 0 or len(y) < 4:
        out[keep] = np.exp(y) if log else y
        return out
    sigma = min(math.sqrt(smooth) / (1 - smooth), len(y) / 10)  # short logs keep their shape
    half = int(3 * sigma) + 1
    fit = np.empty(len(y))
    for i in range(len(y)):
        lo, hi = max(0, i - half), min(len(y), i + half + 1)
        d = np.arange(lo, hi) - i
        sw = np.exp(-0.25 * (d / sigma) ** 2)  # square root of the Gaussian weight
        basis = np.vander(d, 3, increasing=True) * sw[:, None]
        fit[i] = np.linalg.lstsq(basis, y[lo:hi] * sw, rcond=None)[0][0]  # the fit at d = 0
    out[keep] = np.exp(fit) if log else fit
    return out


def _series(m: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(m[name]) & ~np.isnan(m["step"])
    return m["step"][keep], m[name][keep]


def loss_figure(run: str | Path, path: str | Path, smooth: float = 0.9) -> Path:
    """Training loss (raw, faint, and smoothed) with the validation loss; the learning rate;
    FID when the run evaluated it. x: optimizer step."""
    if not 0 <= smooth < 1:
        raise FacediffError(f"--smooth must be in [0, 1), got {smooth}")
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    run = _run_dir(run)
    m = read_metrics(run)
    step, loss = _series(m, "loss")
    vstep, vloss = _series(m, "val_loss")
    lstep, lr = _series(m, "lr")
    fstep, fid = _series(m, "fid")
    if not len(loss) and not len(vloss):
        raise FacediffError(f"{run / 'logs' / 'metrics.csv'} has no loss values yet")
    panels = ["loss", "lr"] + (["fid"] if len(fid) else [])
    heights = {"loss": 2.6, "lr": 1.4, "fid": 1.8}
    fig, axes = plt.subplots(len(panels), 1, sharex=True, layout="constrained", dpi=100,
                             figsize=(7.0, sum(heights[p] for p in panels) + 0.6),
                             height_ratios=[heights[p] for p in panels])
    ax = axes[0]
    every = np.concatenate([loss, vloss])
    log = bool(every.min() > 0 and every.max() / every.min() > 4)
    if len(loss):
        ax.plot(step, loss, color="C0", alpha=0.35, lw=0.8, label="train loss")
        if smooth > 0:
            ax.plot(step, smoothed(loss, smooth, log), color="C0", lw=1.8,
                    label=f"train loss, smoothed ({smooth:g})")
    if len(vloss):
        ax.plot(vstep, vloss, color="C3", marker="o", ms=3, lw=1.2, label="validation loss")
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.05, not 5e-2
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(lstep, lr, color="C2")
    ax.set_ylabel("learning rate")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, alpha=0.3)
    if len(fid):
        ax = axes[2]
        ax.plot(fstep, fid, color="C1", marker="o", ms=4)
        ax.set_ylabel("FID (lower is better)")
        ax.grid(True, alpha=0.3)
    cfg = _run_config(run)
    per = f" (x {cfg.train.batch_size} images)" if cfg else ""
    axes[-1].set_xlabel(f"optimizer step{per}")
    last = f"; last loss {loss[-1]:.4f} at step {int(step[-1])}" if len(loss) else ""
    fig.suptitle(f"Training curves of {run.name}{last}", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
