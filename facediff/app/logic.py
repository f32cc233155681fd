"""What the web app does, without the web: validated requests, sampling with live previews,
interpolation and editing, and the per-user folders of the grids users download. The Gradio
page (``facediff.app.ui``) only wires widgets to these functions, so every rule here is tested
without a browser.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import random
import re
import shutil
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
from facediff.diffusion.editing import EDIT_STEPS
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
MB = 2**20  # the upload cap's unit, as Gradio's max_file_size counts it


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, so a single user can neither occupy the machine for an hour nor
    exhaust its memory."""

    max_images: int = 36
    max_steps: int = 250
    max_frames: int = 16
    max_batch: int = 16  # images per network batch: peak memory does not grow with max_images
    max_upload_mb: float = 20.0  # largest photo accepted for editing
    preview_every_s: float = 0.4  # at most one live preview per this many seconds

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


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
    """One loaded model and where the app writes the grids users download.

    Each request may name its ``user`` (the page's Gradio ``session_hash``): its grids go to
    ``out_dir/<user>/``, which ``release(user)`` removes when that page closes; ``close()``
    removes all of ``out_dir`` at shutdown. Without a ``user`` grids go to ``out_dir`` itself.
    """

    model: FaceModel
    limits: Limits = field(default_factory=Limits)
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="facediff-app-")))
    # edits photos (``facediff.api.load_editor``): a distilled model's teacher, which can
    # invert a photo over many steps; None: the model itself
    editor: FaceModel | None = None

    @property
    def edit_model(self) -> FaceModel:
        return self.editor or self.model

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

    @property
    def note(self) -> str:
        """What a user of a distilled few-step model should know ("" for other models)."""
        d = self.model.config.distill
        if not d.teacher_digest:
            return ""
        s = self.model.config.sample
        guidance = f" with guidance {d.guidance:g} built in (keep Guidance at 1)" \
            if d.guidance is not None and len(self.model.spec) else ""
        editor = f"; photos are edited by its teacher, {self.editor.source}" if self.editor \
            else ""
        return (f"A distilled model: it samples in {s.steps} {s.sampler.upper()} steps"
                f"{guidance}. Other step counts work but look no better{editor}.")

    # ---- the grids' folders -------------------------------------------------------------------
    def folder(self, user: str | None = None) -> Path:
        """Where a user's grids are written (created if missing)."""
        path = self.out_dir if user is None else self.out_dir / _folder_name(user)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def release(self, user: str | None) -> None:
        """Remove one user's folder of grids: their page has closed."""
        if user is not None:
            shutil.rmtree(self.out_dir / _folder_name(user), ignore_errors=True)

    def close(self) -> None:
        """Remove every grid this session wrote (all of ``out_dir``): the app is shutting down."""
        shutil.rmtree(self.out_dir, ignore_errors=True)

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

    def settings(self, *, sampler: str, steps: float | None, guidance: float | None = None,
                 seed: float | None = 0, model: FaceModel | None = None) -> SamplingSettings:
        """A request's sampling settings, checked (a FacediffError names the wrong field) and
        resolved against the defaults of ``model`` (default: the served model)."""
        _, steps_i = self.check(1, steps, sampler, guidance)
        return (model or self.model).settings(sampler=sampler, steps=steps_i,
                                              guidance=guidance,
                                              seed=self.pick_seed(seed, False))

    def generate(
        self, n: float | None, sampler: str, steps: float | None, seed: float | None, *,
        randomize: bool = False, guidance: float | None = None,
        choices: Mapping[str, str] | None = None, user: str | None = None,
    ) -> Iterator[Preview | Output]:
        """Sample a grid, yielding previews of the estimated faces as the sampler runs.

        The images are sampled in batches of at most ``limits.max_batch`` (image ``i`` uses
        seed + i, so the grid does not depend on the batch size)."""
        n_i, _ = self.check(n, steps, sampler, guidance)
        s = self.settings(sampler=sampler, steps=steps, guidance=guidance,
                          seed=self.pick_seed(seed, randomize))
        s = s.override(batch_size=min(n_i, self.limits.max_batch))
        batches = -(-n_i // s.batch_size)
        attrs = self.attrs(choices or {})
        started = time.perf_counter()

        def work(callback: Callback) -> torch.Tensor:
            return self.model.sample_tensor(n_i, settings=s, attrs=attrs,
                                            callback=whole_grid(callback, n_i, s.batch_size))

        for item in with_previews(work, self.limits.preview_every_s):
            if isinstance(item, tuple):
                i, total, x0 = item
                per = total // batches
                where = f"batch {i // per + 1}/{batches}, " if batches > 1 else ""
                yield Preview(self.display(model_to_uint8(x0.clamp(-1, 1)).cpu()),
                              f"denoising… {where}step {i % per + 1}/{per} "
                              "(estimate of the final faces)")
                continue
            took = time.perf_counter() - started
            cond = f", {' '.join(attrs)}, guidance {s.guidance}" if attrs else ""
            info = (f"{n_i} images · {s.sampler}, {s.steps} steps · seed {s.seed}{cond} · "
                    f"{took:.1f} s")
            yield self._finish(item, f"samples_seed{s.seed}", info, s.seed, user=user)

    def interpolate(
        self, mode: str, seed_a: float | None, seed_b: float | None, frames: float | None, *,
        sampler: str, steps: float | None, attribute: str | None = None,
        guidance: float | None = None, choices: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> Output:
        """A strip between two seeds' noises, or (conditional models) along one attribute (the
        frames are one batch, bounded by ``limits.max_frames``)."""
        from facediff.diffusion.editing import interpolate_attribute, interpolate_seeds

        frames_i = _whole(frames, "Frames")
        if not 2 <= frames_i <= self.limits.max_frames:
            raise FacediffError(f"Frames must be between 2 and {self.limits.max_frames} "
                                f"(got {frames_i}).")
        s = self.settings(sampler=sampler, steps=steps, guidance=guidance, seed=seed_a)
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
        return self._finish(imgs, f"interpolation_seed{s.seed}", info, s.seed, nrow=frames_i,
                            user=user)

    def edit(
        self, photo: str | None, changes: Mapping[str, str], *, method: str = "ddim",
        steps: float | None = EDIT_STEPS, guidance: float | None = None, strength: float = 0.6,
        align: bool = True, user: str | None = None,
    ) -> Output:
        """Before | after for a photo with some attributes switched; the face is found and
        aligned to the model's crop (``align``; else the centre crop), and the download is
        the whole photo with the edited face pasted back. A file larger than
        ``limits.max_upload_mb`` is refused before it is opened (the page's own check can be
        bypassed by a client that posts to the API)."""
        from facediff.data.transforms import array_to_image
        from facediff.diffusion.editing import crop_tensor, edit_photo, edit_settings, load_face
        from facediff.faces import paste_back

        m = self.edit_model
        if not len(m.spec):
            raise FacediffError("This model is unconditional: it has no attributes to edit.")
        self._check_photo(photo)
        attrs = self.attrs(changes)
        if not attrs:
            raise FacediffError("Choose at least one attribute to change.")
        s = edit_settings(m, self.settings(sampler="ddim", steps=steps, guidance=guidance,
                                           model=m))
        started = time.perf_counter()
        with _face_errors():
            full, aligned = load_face(photo, m, align=align, where="the photo")
        x = crop_tensor(aligned.image, m).to(m.device)
        after = edit_photo(m, x, m.labels([]), m.labels(attrs), method=method,
                           strength=strength, settings=s)
        before = model_to_uint8(x.cpu())[0]
        pasted, _ = paste_back(full, aligned, array_to_image(after.numpy()))
        path = self.folder(user) / f"edited_{time.strftime('%Y%m%d-%H%M%S')}_{_tag()}.png"
        pasted.save(path)
        face = f"face {aligned.index} found and aligned" if aligned.index else "centre crop"
        info = (f"before | after: {' '.join(attrs)} · {face} · {method}, {s.steps} steps, "
                f"guidance {s.guidance} · {time.perf_counter() - started:.1f} s")
        return Output(self.display(torch.stack([before, after]), nrow=2), path, info)

    def like(
        self, photo: str | None, n: float | None, sampler: str, steps: float | None, *,
        seed: float | None = 0, guidance: float | None = None, align: bool = True,
        user: str | None = None,
    ) -> Iterator[Preview | Output]:
        """Faces like the photo's: the model's attribute classifier reads the photo's face,
        and a grid is generated with those attributes (what was read leads the summary)."""
        from facediff.faces.like import keep_readings, model_classifier, photo_attributes

        if not len(self.model.spec):
            raise FacediffError("This model is unconditional: it has no attributes to read.")
        self._check_photo(photo)
        clf = model_classifier(self.model)
        with _face_errors():
            readings, _ = photo_attributes(photo, self.model, clf, align=align,
                                           where="the photo")
        if not readings:
            raise FacediffError("The classifier reads none of this model's attributes.")
        kept = keep_readings(readings)
        binary = {c.name for c in self.model.spec.conditions if c.kind == "binary"}
        choices = {r.name: ({"1": "on", "0": "off"}[r.value] if r.name in binary else r.value)
                   for r in kept}
        unsure = [r.name for r in readings if r not in kept]
        read = "read: " + ", ".join(map(str, readings)) + \
            (f" (left to the model: {', '.join(unsure)})" if unsure else "")
        for item in self.generate(n, sampler, steps, seed, guidance=guidance, choices=choices,
                                  user=user):
            if isinstance(item, Output):
                item.info = f"{read} · {item.info}"
            yield item

    def _check_photo(self, photo: str | None) -> None:
        if not photo:
            raise FacediffError("Upload a photo of a face first.")
        self.check_upload(photo)

    def check_upload(self, photo: str | Path) -> None:
        """Refuse a file over the upload cap (FacediffError); a missing one is left to
        ``load_photo``, which says so."""
        try:
            size = Path(photo).stat().st_size
        except OSError:
            return
        cap = self.limits.max_upload_mb
        if size > self.limits.max_upload_bytes:
            raise FacediffError(f"The photo is {size / MB:.2f} MB; this app accepts photos of "
                                f"at most {cap:g} MB.")

    # ---- helpers ----------------------------------------------------------------------------
    def display(self, imgs: torch.Tensor, nrow: int | None = None) -> Image.Image:
        """A grid scaled up (nearest-neighbour) so that each face is visible."""
        return upscale(make_grid(imgs, nrow=nrow), imgs.shape[1])

    def _finish(self, imgs: torch.Tensor, stem: str, info: str, seed: int,
                nrow: int | None = None, *, user: str | None = None) -> Output:
        grid = make_grid(imgs, nrow=nrow)
        name = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}_{_tag()}.png"
        path = self.folder(user) / name
        grid.save(path)
        return Output(upscale(grid, imgs.shape[1]), path, info, seed)

    def _ends(self, name: str) -> str:
        c = self.model.spec.get(name)
        return "off to on" if c.kind == "binary" else f"{c.values[0]} to {c.values[-1]}"


def upscale(img: Image.Image, cell: int, target: int = DISPLAY_CELL) -> Image.Image:
    """Scale a grid by the whole factor that makes a ``cell``-pixel face at least ``target``
    wide."""
    return scale_up(img, target, unit=cell)


def whole_grid(callback: Callback, n: int, batch: int) -> Callback:
    """Adapt ``callback`` to a request of ``n`` images sampled in batches of ``batch``: it
    receives the estimate of all ``n`` images (finished batches as they ended, grey for those
    not started) and the step counted over all the batches, so a preview is the whole grid."""
    batches = -(-n // batch)
    calls = [0]
    grid: list[torch.Tensor] = []

    def each(i: int, total: int, t: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor) -> None:
        k = calls[0] // total  # the sampling loop calls back once per step of each batch
        calls[0] += 1
        if not grid:
            grid.append(x0.new_zeros((n, *x0.shape[1:])))
        grid[0][k * batch:k * batch + x0.shape[0]] = x0
        callback(k * total + i, batches * total, t, xt, grid[0])

    return each


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


@contextlib.contextmanager
def _face_errors() -> Iterator[None]:
    """A photo without a usable face: the page's own way out, not the CLI's flag."""
    from facediff.faces import FaceNotFoundError

    try:
        yield
    except FaceNotFoundError as e:
        raise FacediffError(f"{e.reason[0].upper()}{e.reason[1:]}: untick \"Find and align "
                            "the face\" to use the centre of the photo.") from None


def _whole(value: float | None, what: str) -> int:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        raise FacediffError(f"{what} is required.")
    if float(value) != int(value):
        raise FacediffError(f"{what} must be a whole number (got {value}).")
    return int(value)


def _folder_name(user: str) -> str:
    """A user's folder name: the session hash as it is when it is a plain token, else a digest
    of it (the hash comes from the browser, so it must not be able to name another path)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", user):
        return user
    return hashlib.sha256(user.encode()).hexdigest()[:32]


def _tag() -> str:
    return f"{random.getrandbits(24):06x}"
