"""Editing and interpolation: DDIM inversion, SDEdit, seed and attribute interpolation.

* DDIM inversion (Song et al. 2021; diffusers' DDIMInverseScheduler): run the deterministic
  DDIM ODE backwards from a photo x_0 to the x_T that generates it under its own attributes,
  then run it forwards under the edited attributes (with guidance): what the edit does not
  touch stays as it was.
* SDEdit (Meng et al. 2022): noise the photo to a strength s (t = s T), denoise under the new
  attributes; s trades faithfulness for the strength of the edit.
* Seed interpolation: spherical interpolation of two initial noises (both are Gaussian, a
  straight line would shrink the norm). Attribute interpolation: fixed noise, the condition
  blended from one value's one-hot to another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from facediff.data.transforms import image_to_array, model_to_uint8, uint8_to_model
from facediff.diffusion.samplers import SamplingSettings
from facediff.diffusion.sampling import (
    generators_for,
    guided_denoiser,
    initial_noise,
    make_scheduler,
    sample_loop,
)
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.faces.align import Aligned

EDIT_STEPS = 50  # DDIM steps of an edit unless the settings say otherwise
EDIT_GUIDANCE = 3.0  # and its guidance scale
# editing runs the deterministic DDIM path without clipping x_0: an inversion must be able to
# reach the photo's own x_T, clipped or not
_EDIT_DDIM = {"clip_sample": False}


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors."""
    af, bf = a.flatten().double(), b.flatten().double()
    cos = torch.clamp(af @ bf / (af.norm() * bf.norm()), -1.0, 1.0)
    theta = torch.arccos(cos)
    if theta.abs() < 1e-6:
        return ((1 - alpha) * a + alpha * b).to(a.dtype)
    s = torch.sin(theta)
    wa, wb = torch.sin((1 - alpha) * theta) / s, torch.sin(alpha * theta) / s
    return (wa * a.double() + wb * b.double()).to(a.dtype)


def _noise_shape(model: FaceModel) -> tuple[int, int, int]:
    c = model.net.config
    return (c.in_channels, c.sample_size, c.sample_size)


def load_face(path: str | Path, model: FaceModel, *, align: bool = True,
              face: int | None = None, detector: str = "auto", where: str | None = None,
              ) -> tuple[Image.Image, Aligned]:
    """(the photo, upright and RGB; its face as the model's crop): the face found and aligned
    to the model's template (``facediff.faces``), or with ``align`` False the centre crop.

    A photo that cannot be decoded, or whose pixels would exceed the decode budget
    (``facediff.data.transforms.MAX_DECODED_BYTES``, checked from the header before decoding),
    a photo with no face, or a face too small: a ``FacediffError`` naming the file (or
    ``where``) and why.
    """
    from facediff.faces import face_crop, model_template, open_photo

    photo = open_photo(path)
    template = model_template(model.config.data, tuple(model.spec.names)) if align else None
    return photo, face_crop(photo, template, model.config.data.image_size, face=face,
                            detector=detector, where=where or str(path))


def crop_tensor(crop: Image.Image, model: FaceModel) -> torch.Tensor:
    """A crop as the model takes it: [-1, 1], shape (1, C, H, W)."""
    size, c = model.config.data.image_size, model.config.data.channels
    arr = image_to_array(crop, size, c, center_crop=True)
    return uint8_to_model(torch.from_numpy(np.array(arr))[None])


def load_photo(path: str | Path, model: FaceModel, *, align: bool = False) -> torch.Tensor:
    """A photo as the model sees it (1, C, H, W): its centre crop, or with ``align`` its
    face aligned to the model's crop (see ``load_face``)."""
    return crop_tensor(load_face(path, model, align=align)[1].image, model)


@torch.no_grad()
def ddim_invert(model: FaceModel, x0: torch.Tensor, cond: torch.Tensor | None, *,
                steps: int = EDIT_STEPS) -> torch.Tensor:
    """x_0 -> x_T along the deterministic DDIM path, conditioned on ``cond`` (no guidance)."""
    sched = make_scheduler("ddim", model.config.diffusion, steps, inverse=True, **_EDIT_DDIM)
    den = guided_denoiser(model.net, cond, 1.0)
    x = x0.to(model.device)
    with model.autocast():
        for t in sched.timesteps:
            x = sched.step(den(x, t).float(), t, x).prev_sample
    return x


@torch.no_grad()
def ddim_generate(model: FaceModel, xT: torch.Tensor, cond: torch.Tensor | None, *,
                  steps: int = EDIT_STEPS, guidance: float = 1.0, guidance_rescale: float = 0.0,
                  start: int | None = None) -> torch.Tensor:
    """Deterministic DDIM from ``xT`` (or, with ``start``, from an x_t at that timestep)."""
    sched = make_scheduler("ddim", model.config.diffusion, steps, **_EDIT_DDIM)
    if start is not None:
        sched.timesteps = sched.timesteps[sched.timesteps <= start]
    den = guided_denoiser(model.net, cond, guidance, guidance_rescale)
    gens = generators_for(0, 0, xT.shape[0])
    with model.autocast():
        return sample_loop(den, sched, xT, gens, clamp=not getattr(model.net, "latent", False))


def edit_settings(model: FaceModel, settings: SamplingSettings | None = None) -> SamplingSettings:
    """The settings an edit runs with: deterministic DDIM (eta 0); unless ``settings`` give
    others, ``EDIT_STEPS`` steps, guidance ``EDIT_GUIDANCE`` and no guidance rescale (an
    edit's own defaults, not the model's sampling ones)."""
    s = settings if settings is not None else SamplingSettings()
    s = s.override(steps=s.steps or EDIT_STEPS,
                   guidance=EDIT_GUIDANCE if s.guidance is None else s.guidance,
                   guidance_rescale=0.0 if s.guidance_rescale is None else s.guidance_rescale)
    return model.settings(s, sampler="ddim", eta=0.0)


def edit_photo(
    model: FaceModel, photo: torch.Tensor, src_labels: torch.Tensor, dst_labels: torch.Tensor,
    *, method: str = "ddim", strength: float = 0.6, settings: SamplingSettings | None = None,
) -> torch.Tensor:
    """Edit a (1, C, H, W) photo from ``src_labels`` to ``dst_labels``; returns uint8 HWC.

    ``settings``: steps, guidance, guidance rescale and (SDEdit's noise) seed; see
    ``edit_settings``. A latent model edits the photo's latent (its encoder's) and decodes
    the result.
    """
    s = edit_settings(model, settings)
    latent = bool(getattr(model.net, "latent", False))
    if latent:
        with torch.no_grad(), model.autocast():
            photo = model.net.to_latent(photo.to(model.device))
    src = model.cond(src_labels)
    dst = model.cond(dst_labels)
    if method == "ddim":
        xT = ddim_invert(model, photo, src, steps=s.steps)
        out = ddim_generate(model, xT, dst, steps=s.steps, guidance=s.guidance,
                            guidance_rescale=s.guidance_rescale)
    elif method == "sdedit":
        if not 0.0 < strength <= 1.0:
            raise FacediffError(f"--strength must be in (0, 1], got {strength}")
        sched = make_scheduler("ddim", model.config.diffusion, s.steps, **_EDIT_DDIM)
        total = model.config.diffusion.num_train_timesteps
        t_max = int(strength * (total - 1))
        kept = sched.timesteps[sched.timesteps <= t_max]
        if len(kept) == 0:
            raise FacediffError(f"--strength {strength} is below the first of {s.steps} steps")
        start = int(kept[0])
        gen = generators_for(s.seed, 0, 1)
        noise = initial_noise(gen, _noise_shape(model), photo.device)
        xt = sched.add_noise(photo, noise, torch.tensor([start]))
        out = ddim_generate(model, xt, dst, steps=s.steps, guidance=s.guidance,
                            guidance_rescale=s.guidance_rescale, start=start)
    else:
        raise FacediffError(f"unknown edit method {method!r}; choose ddim or sdedit")
    if latent:
        with torch.no_grad(), model.autocast():
            out = model.net.decode(out)
    return model_to_uint8(out)[0].cpu()


def interpolate_seeds(
    model: FaceModel, seed_a: int, seed_b: int, frames: int, *,
    settings: SamplingSettings | None = None, attrs: Sequence[str] = (),
) -> torch.Tensor:
    """``frames`` images from seed_a's noise to seed_b's (slerp); uint8 NHWC."""
    if frames < 2:
        raise FacediffError(f"--frames must be at least 2, got {frames}")
    shape = _noise_shape(model)
    a = initial_noise(generators_for(seed_a, 0, 1), shape, torch.device("cpu"))[0]
    b = initial_noise(generators_for(seed_b, 0, 1), shape, torch.device("cpu"))[0]
    noise = torch.stack([slerp(a, b, i / (frames - 1)) for i in range(frames)])
    return model.sample_tensor(frames, settings=settings, seed=seed_a, batch_size=frames,
                               attrs=attrs, noise=noise)


def interpolate_attribute(
    model: FaceModel, name: str, frames: int, *, rows: int = 1, value_from: str | None = None,
    value_to: str | None = None, attrs: Sequence[str] = (),
    settings: SamplingSettings | None = None,
) -> torch.Tensor:
    """Per seed (``rows`` seeds from the settings' seed), ``frames`` images with fixed noise
    while the attribute's condition is blended from ``value_from`` (default off / the first
    value) to ``value_to`` (default on / the last); uint8 (rows * frames) HWC, row-major."""
    if frames < 2:
        raise FacediffError(f"--frames must be at least 2, got {frames}")
    s = model.settings(settings)
    spec = model.spec
    cond = spec.get(name)
    base = [a for a in attrs if a.split("=")[0].strip().lower() != cond.name.lower()]
    lo = value_from if value_from is not None else cond.values[0]
    hi = value_to if value_to is not None else cond.values[-1]
    ca = model.cond(model.labels([*base, f"{cond.name}={lo}"]))
    cb = model.cond(model.labels([*base, f"{cond.name}={hi}"]))
    alphas = [i / (frames - 1) for i in range(frames)]
    soft = torch.cat([(1 - a) * ca + a * cb for a in alphas])
    shape = _noise_shape(model)
    out = []
    for r in range(rows):
        x = initial_noise(generators_for(s.seed + r, 0, 1), shape, torch.device("cpu"))
        out.append(model.sample_tensor(
            frames, settings=s, seed=s.seed + r, batch_size=frames, cond=soft,
            noise=x.expand(frames, *shape).clone()))
    return torch.cat(out)
