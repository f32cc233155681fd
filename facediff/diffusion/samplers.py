"""What a sampling call is asked to do: the sampler registry and the sampling settings.

Plain data, cheap to import (no torch, no diffusers), so the command line builds its help from
the registry. facediff.diffusion.sampling turns a registry entry into a diffusers scheduler.

``SamplingSettings`` is the one object every sampling call takes (the API, eval, editing, viz,
the app, the trainer's previews). A field left ``None`` means "the model's default": it is
filled in once, from the model's ``config.sample``, by ``resolve`` (``FaceModel.settings``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from facediff.config import SampleConfig
from facediff.errors import FacediffError


@dataclass(frozen=True)
class SamplerSpec:
    """A diffusers scheduler class (by name), the arguments that make it this sampler, and
    its inverse (for DDIM inversion) where diffusers has one."""

    scheduler: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    inverse: str | None = None


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("DDPMScheduler", {"clip_sample": True}, "DDPM ancestral (Ho et al.)"),
    "ddim": SamplerSpec("DDIMScheduler", {"clip_sample": True, "set_alpha_to_one": True},
                        "DDIM, eta 0 deterministic .. 1 ancestral",
                        inverse="DDIMInverseScheduler"),
    "dpmpp": SamplerSpec("DPMSolverMultistepScheduler",
                         {"algorithm_type": "dpmsolver++", "solver_order": 2},
                         "DPM-Solver++ 2M"),
    "unipc": SamplerSpec("UniPCMultistepScheduler", {"solver_order": 2}, "UniPC (bh2)"),
    "euler": SamplerSpec("EulerDiscreteScheduler", {}, "Euler (Karras et al. ODE)"),
    "heun": SamplerSpec("HeunDiscreteScheduler", {}, "Heun 2nd order (2 evaluations/step)"),
}


def sampler_names() -> str:
    """"ddpm, ddim, dpmpp, unipc, euler or heun": for messages and help texts."""
    names = list(SAMPLERS)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def unknown_sampler(name: str) -> str:
    return f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}"


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """How to sample. ``None``: the model's default (``config.sample``); see ``resolve``.

    ``seed``: image ``i`` of a call uses seed + i, so the images do not depend on
    ``batch_size`` (the images generated per network batch).
    """

    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None  # DDIM only: 0 deterministic, 1 ancestral
    guidance: float | None = None  # classifier-free guidance scale (conditional models)
    guidance_rescale: float | None = None  # 0..1, Lin et al. 2023
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        """Every value given is checked here, so a bad one is an error before any work."""
        for name, lo, hi in (("eta", 0.0, 1.0), ("guidance", 0.0, math.inf),
                             ("guidance_rescale", 0.0, 1.0)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value) or not lo <= value <= hi:
                shown = "0 or more" if hi == math.inf else f"between {lo:g} and {hi:g}"
                raise FacediffError(f"{name.replace('_', ' ')} must be a number {shown}, "
                                    f"got {value}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise FacediffError(f"seed must be a whole number, got {self.seed}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if value is None and name == "steps":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise FacediffError(f"{name.replace('_', ' ')} must be a whole number of at "
                                    f"least 1, got {value}")

    def resolve(self, defaults: SampleConfig) -> SamplingSettings:
        """Every ``None`` (and an empty sampler) filled from ``defaults``."""
        return dataclasses.replace(
            self,
            sampler=self.sampler or defaults.sampler,
            steps=self.steps or defaults.steps,
            eta=defaults.eta if self.eta is None else self.eta,
            guidance=defaults.guidance if self.guidance is None else self.guidance,
            guidance_rescale=defaults.guidance_rescale if self.guidance_rescale is None
            else self.guidance_rescale,
        )

    def override(self, **changes: Any) -> SamplingSettings:
        """A copy with the given fields changed; a ``None`` value changes nothing."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def resolved(self) -> bool:
        return None not in (self.sampler, self.steps, self.eta, self.guidance,
                            self.guidance_rescale)

    def describe(self) -> str:
        """"dpmpp, 25 steps, seed 0": how images were made, for messages and captions."""
        return f"{self.sampler}, {self.steps} steps, seed {self.seed}"
