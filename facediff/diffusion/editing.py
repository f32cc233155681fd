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
from diffusers import DDIMInverseScheduler, DDIMScheduler
from PIL import Image

from facediff.data.transforms import image_to_array, model_to_uint8, uint8_to_model
from facediff.diffusion.objectives import schedule_kwargs
from facediff.diffusion.sampling import (
    generators_for,
    guided_denoiser,
    initial_noise,
    sample_loop,
)
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel


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


def _ddim_kwargs(model: FaceModel) -> dict:
    kw = {**schedule_kwargs(model.config.diffusion),
          "timestep_spacing": "trailing", "clip_sample": False}
    if kw.pop("rescale_betas_zero_snr"):
        kw["rescale_betas_zero_snr"] = True
    return kw


def _noise_shape(model: FaceModel) -> tuple[int, int, int]:
    c = model.net.config
    return (c.in_channels, c.sample_size, c.sample_size)


def load_photo(path: str | Path, model: FaceModel) -> torch.Tensor:
    """A photo as the model sees it: centre crop, resize, [-1, 1], shape (1, C, H, W)."""
    p = Path(path)
    if not p.is_file():
        raise FacediffError(f"photo not found: {p}")
    c, size, _ = _noise_shape(model)
    try:
        with Image.open(p) as img:
            arr = image_to_array(img, size, c, center_crop=True)
    except (OSError, ValueError) as e:
        raise FacediffError(f"cannot read photo {p}: {e}") from e
    return uint8_to_model(torch.from_numpy(np.array(arr))[None])


@torch.no_grad()
def ddim_invert(model: FaceModel, x0: torch.Tensor, cond: torch.Tensor | None,
                steps: int = 50) -> torch.Tensor:
    """x_0 -> x_T along the deterministic DDIM path, conditioned on ``cond`` (no guidance)."""
    net = model.net
    sched = DDIMInverseScheduler(**_ddim_kwargs(model))
    sched.set_timesteps(steps)
    den = guided_denoiser(net, cond, 1.0)
    x = x0.to(next(net.parameters()).device)
    for t in sched.timesteps:
        x = sched.step(den(x, t), t, x).prev_sample
    return x


@torch.no_grad()
def ddim_generate(model: FaceModel, xT: torch.Tensor, cond: torch.Tensor | None,
                  steps: int = 50, guidance: float = 1.0,
                  start: int | None = None) -> torch.Tensor:
    """Deterministic DDIM from ``xT`` (or, with ``start``, from an x_t at that timestep)."""
    net = model.net
    sched = DDIMScheduler(**_ddim_kwargs(model), set_alpha_to_one=True)
    sched.set_timesteps(steps)
    if start is not None:
        sched.timesteps = sched.timesteps[sched.timesteps <= start]
    den = guided_denoiser(net, cond, guidance)
    gens = generators_for(0, 0, xT.shape[0])
    return sample_loop(den, sched, xT, gens)


def edit_photo(
    model: FaceModel, photo: torch.Tensor, src_labels: torch.Tensor, dst_labels: torch.Tensor,
    method: str = "ddim", steps: int = 50, guidance: float = 3.0, strength: float = 0.6,
    seed: int = 0,
) -> torch.Tensor:
    """Edit a (1, C, H, W) photo from ``src_labels`` to ``dst_labels``; returns uint8 HWC."""
    src = model.cond(src_labels)
    dst = model.cond(dst_labels)
    if method == "ddim":
        xT = ddim_invert(model, photo, src, steps)
        out = ddim_generate(model, xT, dst, steps, guidance)
    elif method == "sdedit":
        if not 0.0 < strength <= 1.0:
            raise FacediffError(f"--strength must be in (0, 1], got {strength}")
        sched = DDIMScheduler(**_ddim_kwargs(model), set_alpha_to_one=True)
        sched.set_timesteps(steps)
        total = model.config.diffusion.num_train_timesteps
        t_max = int(strength * (total - 1))
        kept = sched.timesteps[sched.timesteps <= t_max]
        if len(kept) == 0:
            raise FacediffError(f"--strength {strength} is below the first of {steps} steps")
        start = int(kept[0])
        gen = generators_for(seed, 0, 1)
        noise = initial_noise(gen, _noise_shape(model), photo.device)
        xt = sched.add_noise(photo, noise, torch.tensor([start]))
        out = ddim_generate(model, xt, dst, steps, guidance, start=start)
    else:
        raise FacediffError(f"unknown edit method {method!r}; choose ddim or sdedit")
    return model_to_uint8(out)[0].cpu()


def interpolate_seeds(
    model: FaceModel, seed_a: int, seed_b: int, frames: int, steps: int | None = None,
    sampler: str | None = None, attrs: Sequence[str] = (), guidance: float | None = None,
) -> torch.Tensor:
    """``frames`` images from seed_a's noise to seed_b's (slerp); uint8 NHWC."""
    if frames < 2:
        raise FacediffError(f"--frames must be at least 2, got {frames}")
    shape = _noise_shape(model)
    a = initial_noise(generators_for(seed_a, 0, 1), shape, torch.device("cpu"))[0]
    b = initial_noise(generators_for(seed_b, 0, 1), shape, torch.device("cpu"))[0]
    noise = torch.stack([slerp(a, b, i / (frames - 1)) for i in range(frames)])
    return model.sample_tensor(
        frames, steps, sampler, seed=seed_a, batch_size=frames, attrs=attrs,
        guidance=guidance, noise=noise)


def interpolate_attribute(
    model: FaceModel, name: str, frames: int, seed: int = 0, rows: int = 1,
    value_from: str | None = None, value_to: str | None = None,
    steps: int | None = None, sampler: str | None = None, attrs: Sequence[str] = (),
    guidance: float | None = None,
) -> torch.Tensor:
    """Per seed (``rows`` seeds from ``seed``), ``frames`` images with fixed noise while the
    attribute's condition is blended from ``value_from`` (default off / the first value) to
    ``value_to`` (default on / the last); uint8 (rows * frames) HWC, row-major."""
    if frames < 2:
        raise FacediffError(f"--frames must be at least 2, got {frames}")
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
        x = initial_noise(generators_for(seed + r, 0, 1), shape, torch.device("cpu"))
        out.append(model.sample_tensor(
            frames, steps, sampler, seed=seed + r, batch_size=frames, cond=soft,
            guidance=guidance, noise=x.expand(frames, *shape).clone()))
    return torch.cat(out)
