"""What the web app does, without the web: validated requests, sampling with live previews,
interpolation and editing. The Gradio page (``facediff.app.ui``) only wires widgets to these
functions, so every rule here is tested without a browser.
"""

from __future__ import annotations

import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from facediff.data.transforms import model_to_uint8
from facediff.diffusion.samplers import SAMPLERS, SamplingSettings, unknown_sampler
from facediff.errors import FacediffError
from facediff.model import count_parameters
from facediff.viz.animation import upscale as scale_up
from facediff.viz.grid import make_grid

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.diffusion.sampling import Callback

ANY = "any"  # the tri-state control's "not requested" value
KEEP = "keep"  # the edit tab's "leave as it is"
MAX_SEED = 2**31 - 1
DISPLAY_CELL = 128  # faces are shown at least this many pixels wide (nearest-neighbour)


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, so a single user cannot occupy the machine for an hour."""

    max_images: int = 36
    max_steps: int = 250
    max_frames: int = 16
    preview_every_s: float = 0.4  # at most one live preview per this many seconds


@dataclass
class Output:
    """A finished request: the picture to show, the file to download, a one-line summary."""

    display: Image.Image
    path: Path
    info: str
    seed: int = 0


@dataclass
class Preview:
    """A step of a running request: the current estimate of the images."""

    display: Image.Image
    info: str


@dataclass
class Session:
    """One loaded model and where the app writes the grids users download."""

    model: FaceModel
    limits: Limits = field(default_factory=Limits)
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="facediff-app-")))

    # ---- what the page shows --------------------------------------------------------------
    @property
    def conditions(self) -> list[tuple[str, list[str]]]:
        """(name, choices) for each condition: binary ones are any/on/off."""
        out = []
        for c in self.model.spec.conditions:
            values = ["on", "off"] if c.kind == "binary" else list(c.values)
            out.append((c.name, [ANY, *values]))
        return out

    def summary(self) -> str:
        cfg = self.model.config
        size, ch = cfg.data.image_size, cfg.data.channels
        params = count_parameters(self.model.net) / 1e6
        cond = f"conditional on {len(self.model.spec)} attributes" if len(self.model.spec) \
            else "unconditional"
        return (f"{self.model.source} · {size}×{size} {'RGB' if ch == 3 else 'grey'} · "
                f"{params:.1f}M parameters · {cond} · on {self.model.device}")

    # ---- requests ---------------------------------------------------------------------------
    def problems(self, n: float | None = 1, steps: float | None = 1, sampler: str = "ddim",
                 guidance: float | None = None, *, seed: float | None = 0,
                 randomize: bool = False) -> dict[str, str]:
        """What is wrong with each field of a request ({} when nothing is), for the page to
        show beside the field."""
        lim = self.limits
        out = {}
        checks = [("n", n, "Number of images", 1, lim.max_images),
                  ("steps", steps, "Steps", 1, lim.max_steps)]
        if not randomize:
            checks.append(("seed", seed, "Seed", 0, MAX_SEED))
        for key, value, what, lo, hi in checks:
            try:
                v = _whole(value, what)
            except FacediffError as e:
                out[key] = str(e)
                continue
            if not lo <= v <= hi:
                out[key] = f"{what} must be between {lo} and {hi} (got {v})."
        if sampler not in SAMPLERS:
            message = unknown_sampler(sampler)
            out["sampler"] = f"{message[0].upper()}{message[1:]}."
        if guidance is not None and not 0.0 <= guidance <= 20.0:
            out["guidance"] = f"Guidance must be between 0 and 20 (got {guidance})."
        return out

    def check(self, n: float | None, steps: float | None, sampler: str,
              guidance: float | None = None) -> tuple[int, int]:
        """Validate the common fields; returns (n, steps) as ints or raises FacediffError."""
        bad = self.problems(n, steps, sampler, guidance)
        if bad:
            raise FacediffError(next(iter(bad.values())))
        return int(n), int(steps)  # type: ignore[arg-type]

    def attrs(self, choices: Mapping[str, str]) -> list[str]:
        """Tri-state controls -> ["Smiling=1", "race=Asian"]; "any" requests nothing."""
        binary = {"on": "1", "off": "0"}
        return [f"{name}={binary.get(value, value)}" for name, value in choices.items()
                if value not in (None, "", ANY, KEEP)]

    def pick_seed(self, seed: float | None, randomize: bool) -> int:
        if randomize:
            return random.randint(0, MAX_SEED)
        bad = self.problems(seed=seed)
        if bad:
            raise FacediffError(bad["seed"])
        return int(seed)  # type: ignore[arg-type]

    def settings(self, sampler: str, steps: float | None, guidance: float | None = None,
                 seed: float | None = 0) -> SamplingSettings:
        """A request's sampling settings, checked (a FacediffError names the wrong field) and
        resolved against the model's defaults."""
        _, steps_i = self.check(1, steps, sampler, guidance)
        return self.model.settings(sampler=sampler, steps=steps_i, guidance=guidance,
                                   seed=self.pick_seed(seed, False))

    def generate(
        self, n: float | None, sampler: str, steps: float | None, seed: float | None, *,
        randomize: bool = False, guidance: float | None = None,
        choices: Mapping[str, str] | None = None,
    ) -> Iterator[Preview | Output]:
        """Sample a grid, yielding previews of the estimated faces as the sampler runs."""
        n_i, _ = self.check(n, steps, sampler, guidance)
        s = self.settings(sampler, steps, guidance, self.pick_seed(seed, randomize))
        s = s.override(batch_size=n_i)
        attrs = self.attrs(choices or {})
        started = time.perf_counter()

        def work(callback: Callback) -> torch.Tensor:
            return self.model.sample_tensor(n_i, settings=s, attrs=attrs, callback=callback)

        for item in with_previews(work, self.limits.preview_every_s):
            if isinstance(item, tuple):
                i, total, x0 = item
                yield Preview(self.display(model_to_uint8(x0.clamp(-1, 1)).cpu()),
                              f"denoising… step {i + 1}/{total} (estimate of the final faces)")
                continue
            took = time.perf_counter() - started
            cond = f", {' '.join(attrs)}, guidance {s.guidance}" if attrs else ""
            info = (f"{n_i} images · {s.sampler}, {s.steps} steps · seed {s.seed}{cond} · "
                    f"{took:.1f} s")
            yield self._finish(item, f"samples_seed{s.seed}", info, s.seed)

    def interpolate(
        self, mode: str, seed_a: float | None, seed_b: float | None, frames: float | None, *,
        sampler: str, steps: float | None, attribute: str | None = None,
        guidance: float | None = None, choices: Mapping[str, str] | None = None,
    ) -> Output:
        """A strip between two seeds' noises, or (conditional models) along one attribute."""
        from facediff.diffusion.editing import interpolate_attribute, interpolate_seeds

        frames_i = _whole(frames, "Frames")
        if not 2 <= frames_i <= self.limits.max_frames:
            raise FacediffError(f"Frames must be between 2 and {self.limits.max_frames} "
                                f"(got {frames_i}).")
        s = self.settings(sampler, steps, guidance, seed_a)
        attrs = self.attrs(choices or {})
        started = time.perf_counter()
        if mode == "attribute":
            if not attribute:
                raise FacediffError("Choose the attribute to sweep.")
            imgs = interpolate_attribute(self.model, attribute, frames_i, attrs=attrs,
                                         settings=s)
            what = f"{attribute} from {self._ends(attribute)} at seed {s.seed}"
        else:
            b = self.pick_seed(seed_b, False)
            imgs = interpolate_seeds(self.model, s.seed, b, frames_i, settings=s, attrs=attrs)
            what = f"seed {s.seed} → seed {b}"
        info = (f"{what} · {frames_i} frames · {s.sampler}, {s.steps} steps · "
                f"{time.perf_counter() - started:.1f} s")
        return self._finish(imgs, f"interpolation_seed{s.seed}", info, s.seed, nrow=frames_i)

    def edit(
        self, photo: str | None, changes: Mapping[str, str], *, method: str = "ddim",
        steps: float | None = None, guidance: float | None = None, strength: float = 0.6,
    ) -> Output:
        """Before | after for a photo with some attributes switched."""
        from facediff.diffusion.editing import edit_photo, edit_settings, load_photo

        if not len(self.model.spec):
            raise FacediffError("This model is unconditional: it has no attributes to edit.")
        if not photo:
            raise FacediffError("Upload a photo of a face first.")
        attrs = self.attrs(changes)
        if not attrs:
            raise FacediffError("Choose at least one attribute to change.")
        s = edit_settings(self.model, self.settings("ddim", steps, guidance))
        started = time.perf_counter()
        x = load_photo(photo, self.model).to(self.model.device)
        src = self.model.labels([])
        dst = self.model.labels(attrs)
        after = edit_photo(self.model, x, src, dst, method=method, strength=strength,
                           settings=s)
        before = model_to_uint8(x.cpu())[0]
        info = (f"before | after: {' '.join(attrs)} · {method}, {s.steps} steps, guidance "
                f"{s.guidance} · {time.perf_counter() - started:.1f} s")
        return self._finish(torch.stack([before, after]), "edit", info, 0, nrow=2)

    # ---- helpers ----------------------------------------------------------------------------
    def display(self, imgs: torch.Tensor, nrow: int | None = None) -> Image.Image:
        """A grid scaled up (nearest-neighbour) so that each face is visible."""
        return upscale(make_grid(imgs, nrow=nrow), imgs.shape[1])

    def _finish(self, imgs: torch.Tensor, stem: str, info: str, seed: int,
                nrow: int | None = None) -> Output:
        grid = make_grid(imgs, nrow=nrow)
        path = self.out_dir / f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}_{_tag()}.png"
        grid.save(path)
        return Output(upscale(grid, imgs.shape[1]), path, info, seed)

    def _ends(self, name: str) -> str:
        c = self.model.spec.get(name)
        return "off to on" if c.kind == "binary" else f"{c.values[0]} to {c.values[-1]}"


def upscale(img: Image.Image, cell: int, target: int = DISPLAY_CELL) -> Image.Image:
    """Scale a grid by the whole factor that makes a ``cell``-pixel face at least ``target``
    wide."""
    return scale_up(img, target, unit=cell)


class Cancelled(Exception):
    """Raised inside the sampling thread when the page that asked for it has gone."""


def with_previews(
    work: Callable[[Callback], torch.Tensor], every_s: float
) -> Iterator[tuple[int, int, torch.Tensor] | torch.Tensor]:
    """Run ``work(callback)`` in a thread; yield (step, total, x0 estimate) at most every
    ``every_s`` seconds while it runs, then its result. Closing the iterator (the user left or
    pressed stop) stops the work at its next step."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()
    last = [0.0]

    def callback(i: int, total: int, t: torch.Tensor, xt: torch.Tensor,
                 x0: torch.Tensor) -> None:
        if stop.is_set():
            raise Cancelled
        now = time.perf_counter()
        if i + 1 < total and now - last[0] >= every_s:
            last[0] = now
            events.put(("preview", (i, total, x0.detach().cpu().clone())))

    def run() -> None:
        try:
            events.put(("done", work(callback)))
        except BaseException as e:  # handed to the caller's thread
            events.put(("error", e))

    thread = threading.Thread(target=run, name="facediff-sampling", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "preview":
                yield value
            elif kind == "done":
                yield value
                return
            else:
                raise value
    finally:
        stop.set()


def _whole(value: float | None, what: str) -> int:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        raise FacediffError(f"{what} is required.")
    if float(value) != int(value):
        raise FacediffError(f"{what} must be a whole number (got {value}).")
    return int(value)


def _tag() -> str:
    return f"{random.getrandbits(24):06x}"
