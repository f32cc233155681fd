"""Figures of the diffusion process itself: the forward noising strip and the reverse chain.

Forward (Ho et al. 2020, eq. 4), in closed form for any t:
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),
    i.e.  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
with the schedule's abar_t (the diffusers scheduler's ``alphas_cumprod``) and
SNR(t) = abar_t / (1 - abar_t).
Reverse: the sampler's state x_t and the network's estimate of x_0 at each step, captured with
the sampling callback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from facediff.config import DataConfig, DiffusionConfig
from facediff.data.transforms import model_to_uint8, uint8_to_model
from facediff.diffusion.objectives import BETA_SCHEDULES, training_scheduler
from facediff.errors import FacediffError
from facediff.viz.animation import tile, upscale, with_band
from facediff.viz.plotting import pyplot

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.diffusion.samplers import SamplingSettings

CELL_IN = 1.25  # inches per image cell in the static figures
DPI = 100


# ---- shared helpers -----------------------------------------------------------------------


def _show(ax: Any, img: np.ndarray) -> None:
    """An HWC uint8 image on ``ax``, pixels crisp (nearest), no ticks or frame."""
    if img.ndim == 3 and img.shape[2] == 1:
        ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def spread(k: int, n: int) -> list[int]:
    """Up to ``k`` indices evenly spread over 0..n-1, always the first and the last."""
    if n <= 0:
        return []
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [n - 1]
    return sorted({round(x) for x in np.linspace(0, n - 1, k)})


def _fmt(x: float) -> str:
    """A compact number for labels: 4.1e+04, 48, 1.7, 0.023, 2.4e-09."""
    if x == 0 or 0.01 <= abs(x) < 1000:
        return f"{x:.3g}"
    return f"{x:.1e}"


# ---- forward process ----------------------------------------------------------------------

def schedule_configs(names: str | Sequence[str],
                     base: DiffusionConfig | None = None) -> dict[str, DiffusionConfig]:
    """``"cosine,linear"`` -> {name: a copy of ``base`` with that beta schedule}."""
    import dataclasses

    base = base or DiffusionConfig()
    if isinstance(names, str):
        names = [s.strip() for s in names.split(",") if s.strip()]
    if not names:
        raise FacediffError(f"--schedule needs a name: {', '.join(BETA_SCHEDULES)}")
    bad = [s for s in names if s not in BETA_SCHEDULES]
    if bad:
        raise FacediffError(f"unknown schedule {bad[0]!r}; choose from "
                            f"{', '.join(BETA_SCHEDULES)} (comma-separated to compare)")
    return {s: dataclasses.replace(base, beta_schedule=s) for s in dict.fromkeys(names)}


def parse_timesteps(text: str, num_train_timesteps: int = 1000) -> list[int]:
    """``"0,50,999"`` -> [0, 50, 999]; each an integer in 0..T-1."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        ts = [int(p) for p in parts]
    except ValueError:
        raise FacediffError(f"--t must be comma-separated integers like 0,100,999, "
                            f"got {text!r}") from None
    if not ts:
        raise FacediffError("--t needs at least one timestep, e.g. 0,100,999")
    bad = [t for t in ts if not 0 <= t < num_train_timesteps]
    if bad:
        raise FacediffError(f"--t {bad[0]} is out of range: timesteps run from 0 to "
                            f"{num_train_timesteps - 1}")
    return ts


def load_faces(cfg: DataConfig, n: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """``n`` images of a dataset, picked with a seeded generator: uint8 N x H x W x C."""
    from facediff.data.cache import load_cached
    from facediff.data.sources import load_records

    data = load_cached(load_records(cfg), cfg, progress)
    if len(data) == 0:
        raise FacediffError(f"no usable images in {cfg.path}")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    return np.asarray(data.images[pick])


def schedule_stats(diffusion: DiffusionConfig, t: int) -> tuple[float, float]:
    """(sqrt(abar_t), SNR(t)) of a schedule."""
    abar = float(training_scheduler(diffusion).alphas_cumprod[t])
    return abar ** 0.5, abar / (1 - abar) if abar < 1 else float("inf")


def noised(images: np.ndarray, timesteps: Sequence[int], diffusion: DiffusionConfig,
           seed: int = 0) -> np.ndarray:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for each image and t, one eps per image
    (the same for every t and schedule): uint8 N x len(t) x H x W x C."""
    x0 = uint8_to_model(torch.from_numpy(np.ascontiguousarray(images)))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    sched = training_scheduler(diffusion)
    out = [model_to_uint8(sched.add_noise(x0, eps, torch.full((len(x0),), t))).numpy()
           for t in timesteps]
    return np.stack(out, axis=1)


def forward_figure(images: np.ndarray, timesteps: Sequence[int],
                   schedules: Mapping[str, DiffusionConfig], path: str | Path, *,
                   seed: int = 0, title: str | None = None) -> Path:
    """Rows: each image (under each schedule, when several); columns: ``timesteps``."""
    plt = pyplot()
    names = list(schedules)
    strips = {s: noised(images, timesteps, d, seed) for s, d in schedules.items()}
    stats = {s: [schedule_stats(d, t) for t in timesteps] for s, d in schedules.items()}
    multi = len(names) > 1
    rows = [(i, s) for i in range(len(images)) for s in names]
    ncol = len(timesteps)
    header = 0.75 if multi else 1.05
    fig, axes = plt.subplots(
        len(rows), ncol, squeeze=False, layout="constrained", dpi=DPI,
        figsize=(ncol * CELL_IN + (0.7 if multi else 0.3),
                 len(rows) * (CELL_IN + (0.2 if multi else 0)) + header))
    for r, (i, s) in enumerate(rows):
        for c, t in enumerate(timesteps):
            ax = axes[r][c]
            _show(ax, strips[s][i, c])
            root, snr = stats[s][c]
            if r == 0:
                head = f"t = {t}" if multi else \
                    f"t = {t}\n$\\sqrt{{\\bar\\alpha_t}}$ = {root:.3f}\nSNR = {_fmt(snr)}"
                ax.set_title(head, fontsize=10)
            if multi:
                ax.set_xlabel(f"$\\sqrt{{\\bar\\alpha}}$ {root:.3f}, SNR {_fmt(snr)}",
                              fontsize=7, labelpad=1)
        if multi:
            axes[r][0].set_ylabel(s, fontsize=10)
    T = next(iter(schedules.values())).num_train_timesteps
    what = f"{' vs '.join(names)} schedule{'s' if multi else ''}"
    fig.suptitle(title or f"Forward process $q(x_t|x_0)$: {what}, T = {T}, seed {seed}",
                 fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def forward_frames(images: np.ndarray, schedules: Mapping[str, DiffusionConfig], *,
                   seed: int = 0, n_frames: int = 40,
                   cell: int = 64) -> tuple[list[Image.Image], list[int]]:
    """Animation frames sweeping t from 0 to T-1: a row of the images per schedule, with t,
    sqrt(abar_t) and SNR in a band above. Returns (frames, durations in ms)."""
    T = next(iter(schedules.values())).num_train_timesteps
    ts = sorted({round(x) for x in np.linspace(0, T - 1, n_frames)})
    names = list(schedules)
    multi = len(names) > 1
    strips = {s: noised(images, ts, d, seed) for s, d in schedules.items()}
    frames = []
    for k, t in enumerate(ts):
        lines = [f"t = {t} / {T - 1}"]
        for s, d in schedules.items():
            root, snr = schedule_stats(d, t)
            lines.append(f"{s + ': ' if multi else ''}√ᾱ = {root:.3f}, SNR = {_fmt(snr)}")
        cells = [[upscale(strips[s][i, k], cell) for i in range(len(images))] for s in names]
        frames.append(with_band(tile(cells, row_labels=names if multi else None), lines))
    durations = [100] * len(frames)
    durations[0] = durations[-1] = 1000  # pause on the clean images and on pure noise
    return frames, durations


# ---- reverse process ----------------------------------------------------------------------

@dataclass
class ChainStep:
    """One network evaluation of a sampling run: the state x_t the network saw and its
    estimate of x_0, as uint8 N x H x W x C."""

    index: int
    total: int
    t: float
    xt: np.ndarray
    x0: np.ndarray

    def label(self) -> str:
        return f"step {self.index + 1}/{self.total}"


@dataclass
class ReverseChain:
    steps: list[ChainStep]
    images: np.ndarray  # the final samples, uint8 N x H x W x C
    sampler: str
    n_steps: int
    seed: int
    attrs: list[str] = field(default_factory=list)
    guidance: float | None = None
    source: str = ""

    def title(self) -> str:
        extra = ""
        if self.attrs:
            extra += f", {' '.join(self.attrs)}"
        if self.guidance is not None:
            extra += f", guidance {self.guidance:g}"
        return f"Reverse process: {self.sampler}, {self.n_steps} steps, seed {self.seed}{extra}"


def capture_chain(model: FaceModel, n: int = 2, *, settings: SamplingSettings | None = None,
                  attrs: Sequence[str] = ()) -> ReverseChain:
    """Sample ``n`` images and keep x_t and the predicted x_0 after every network evaluation
    (Heun evaluates twice per step, so it reports 2N-1 of them)."""
    s = model.settings(settings, batch_size=n)
    captured: list[ChainStep] = []

    def keep(i: int, total: int, t: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor) -> None:
        captured.append(ChainStep(i, total, float(t), model_to_uint8(xt.cpu()).numpy(),
                                  model_to_uint8(x0.cpu()).numpy()))

    images = model.sample_tensor(n, settings=s, callback=keep, attrs=list(attrs)).numpy()
    asked = settings is not None and settings.guidance is not None
    shown_guidance = s.guidance if attrs or asked else None
    return ReverseChain(captured, images, s.sampler, s.steps, s.seed, list(attrs),
                        shown_guidance, model.source)


def reverse_figure(chain: ReverseChain, path: str | Path, show: int = 8) -> Path:
    """Per image two rows, x_t and the predicted x_0, at ``show`` steps spread over the run
    (the first and the last always included)."""
    plt = pyplot()
    picks = [chain.steps[k] for k in spread(show, len(chain.steps))]
    n = chain.images.shape[0]
    fig, axes = plt.subplots(2 * n, len(picks), squeeze=False, layout="constrained", dpi=DPI,
                             figsize=(len(picks) * CELL_IN + 0.6, 2 * n * CELL_IN + 0.9))
    for c, st in enumerate(picks):
        for i in range(n):
            _show(axes[2 * i][c], st.xt[i])
            _show(axes[2 * i + 1][c], st.x0[i])
        axes[0][c].set_title(f"{st.label()}\nt = {st.t:.0f}", fontsize=10)
    for i in range(n):
        who = f"image {i + 1}\n" if n > 1 else ""
        axes[2 * i][0].set_ylabel(f"{who}$x_t$", fontsize=10)
        axes[2 * i + 1][0].set_ylabel(f"{who}predicted $\\hat{{x}}_0$", fontsize=10)
    fig.suptitle(chain.title(), fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def reverse_frames(chain: ReverseChain, cell: int = 96) -> tuple[list[Image.Image], list[int]]:
    """One frame per network evaluation: x_t | predicted x_0 per image, the step and t above;
    the last frame is held. Returns (frames, durations in ms)."""
    n = chain.images.shape[0]
    head = " ".join([f"{chain.sampler}, seed {chain.seed}", *chain.attrs])
    frames = []
    for st in chain.steps:
        cells = [[upscale(st.xt[i], cell), upscale(st.x0[i], cell)] for i in range(n)]
        grid = tile(cells, col_labels=["x_t", "predicted x_0"])
        frames.append(with_band(grid, [head, f"{st.label()}, t = {st.t:.0f}"]))
    durations = [120] * len(frames)
    durations[-1] = 2000
    return frames, durations
