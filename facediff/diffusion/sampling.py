"""Samplers and the one sampling loop every command uses.

Samplers are diffusers schedulers (the registry: facediff.diffusion.samplers) configured from
the model's training schedule, all with "trailing" timestep spacing so the first step is
t = T-1 (the pure-noise end that was trained) whatever the step count. Randomness comes from
one generator per image, seeded with ``seed + index``: the same seed gives the same images at
any batch size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import diffusers
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from facediff.config import DiffusionConfig, SampleConfig
from facediff.diffusion.objectives import predicted_x0, schedule_kwargs
from facediff.diffusion.samplers import SAMPLERS, SamplingSettings, unknown_sampler
from facediff.errors import ConfigError, FacediffError

# denoiser(x_t (scaled model input), t) -> the network's prediction: a network (facediff.model)
# with its condition and guidance applied, as the sampling loop calls it
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(step_index, total_steps, t, x_t, x0): after each network evaluation, the state x_t
# as the network saw it (variance-preserving scale, whatever the sampler) and the network's
# estimate of the clean image x_0; both float (B, C, H, W), roughly in [-1, 1].
Callback = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def make_scheduler(name: str, diffusion: DiffusionConfig, steps: int, *, inverse: bool = False,
                   **overrides: Any) -> SchedulerMixin:
    """A diffusers scheduler for sampler ``name`` with ``steps`` steps set.

    ``inverse``: the sampler's inverse (DDIM inversion: x_0 -> x_T); ``overrides``: scheduler
    arguments that replace the registry's (editing turns ``clip_sample`` off).
    """
    if name not in SAMPLERS:
        raise FacediffError(unknown_sampler(name))
    if steps < 1:
        raise FacediffError(f"steps must be at least 1, got {steps}")
    if steps > diffusion.num_train_timesteps:
        raise FacediffError(
            f"steps must be at most the {diffusion.num_train_timesteps} training timesteps"
        )
    spec = SAMPLERS[name]
    if inverse and spec.inverse is None:
        raise FacediffError(f"sampler {name!r} has no inverse (DDIM inversion needs ddim)")
    cls = getattr(diffusers, spec.inverse if inverse else spec.scheduler)
    kwargs = {**schedule_kwargs(diffusion), "timestep_spacing": "trailing", **spec.kwargs,
              **overrides}
    allowed = inspect.signature(cls.__init__).parameters
    if diffusion.rescale_zero_snr and "rescale_betas_zero_snr" not in allowed:
        raise FacediffError(f"sampler {name!r} does not support diffusion.rescale_zero_snr")
    try:
        sched = cls(**{k: v for k, v in kwargs.items() if k in allowed})
        sched.set_timesteps(steps)
    except (NotImplementedError, ValueError) as e:
        raise FacediffError(
            f"sampler {name!r} cannot use this model's schedule "
            f"({diffusion.beta_schedule}, {diffusion.prediction}): {e}"
        ) from e
    return sched


def check_sampling(sample: SampleConfig, diffusion: DiffusionConfig) -> None:
    """The config's default sampler (the one training's progress grids use) must work with
    its schedule: a ConfigError before training starts, not hours into it."""
    try:
        make_scheduler(sample.sampler, diffusion, sample.steps)
    except ConfigError:
        raise
    except FacediffError as e:
        raise ConfigError(f"sample: {e}") from e


def initial_noise(
    generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """x_T, one image per generator (drawn on the CPU, so every device gives the same noise)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def generators_for(seed: int, start: int, n: int) -> list[torch.Generator]:
    """One CPU generator per image: image ``i`` uses seed + i, independent of batching."""
    return [torch.Generator().manual_seed(seed + start + i) for i in range(n)]


def sample_loop(
    denoiser: Denoiser,
    scheduler: SchedulerMixin,
    x: torch.Tensor,
    generators: Sequence[torch.Generator],
    *,
    eta: float = 0.0,
    callback: Callback | None = None,
    clamp: bool = True,
) -> torch.Tensor:
    """Run ``scheduler`` from noise ``x`` (unit variance) to an image batch in [-1, 1]
    (``clamp``; a latent model's latents are not clamped).

    Holds only the current state, so memory does not grow with the number of steps.
    """
    x = x * scheduler.init_noise_sigma
    step_params = inspect.signature(scheduler.step).parameters
    extra: dict[str, Any] = {}
    if "generator" in step_params:
        extra["generator"] = list(generators)
    if "eta" in step_params:
        extra["eta"] = eta
    timesteps = scheduler.timesteps
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(x, t)
        pred = denoiser(model_in, t)
        x = scheduler.step(pred.float(), t, x, **extra).prev_sample
        if callback is not None:
            abar = scheduler.alphas_cumprod[round(float(t))]
            x0 = predicted_x0(pred, model_in, abar, scheduler.config.prediction_type)
            callback(i, total, t, model_in.float(), x0)
    return x.clamp(-1, 1) if clamp else x


def guided_denoiser(
    net: torch.nn.Module,
    cond: torch.Tensor | None,
    guidance: float = 1.0,
    guidance_rescale: float = 0.0,
) -> Denoiser:
    """x, t -> prediction, with classifier-free guidance (Ho & Salimans 2022).

    ``cond`` is the (B, slots) soft one-hot condition of each image (None: unconditional).
    pred = uncond + w (cond - uncond): w = 0 is the unconditional model, w = 1 the
    conditional one; both halves run in one batched forward pass. ``guidance_rescale``
    (Lin et al. 2023) matches the guided prediction's std to the conditional one's.
    """
    dtype = next(net.parameters()).dtype

    def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if cond is None:
            return net(x.to(dtype), t).sample
        return net(x.to(dtype), t, soft=cond).sample

    if cond is None or guidance == 1.0:
        return plain
    uncond = net.cond.one_hot(net.unconditional_labels(cond.shape[0], cond.device))
    if guidance == 0.0:
        return lambda x, t: net(x.to(dtype), t, soft=uncond).sample

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = net(torch.cat([x, x]).to(dtype), t, soft=torch.cat([cond, uncond])).sample
        c, u = out.float().chunk(2)
        g = u + guidance * (c - u)
        if guidance_rescale > 0:
            dims = tuple(range(1, g.ndim))
            rescaled = g * (c.std(dim=dims, keepdim=True) / g.std(dim=dims, keepdim=True))
            g = guidance_rescale * rescaled + (1 - guidance_rescale) * g
        return g

    return guided


def generate(
    net: torch.nn.Module,
    diffusion: DiffusionConfig,
    n: int,
    settings: SamplingSettings,
    *,
    cond: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample ``n`` images with the network ``net``; returns uint8 NHWC on the CPU.

    ``settings`` must be resolved (``FaceModel.settings`` or ``SamplingSettings.resolve``).
    ``cond``: soft one-hot conditions, one row for all images or one per image (see
    facediff.model.conditioning); ``noise``: the initial x_T per image (default: drawn from
    seed + index). Image ``i`` depends only on (seed + i, sampler, steps, its condition), not
    on the batch size.
    """
    from tqdm.auto import tqdm

    from facediff.data.transforms import model_to_uint8

    if not settings.resolved:
        raise ValueError(f"unresolved sampling settings {settings}: resolve them against the "
                         "model's config.sample first")
    s = settings
    if n < 1:
        raise FacediffError(f"n must be at least 1, got {n}")
    if s.batch_size < 1:
        raise FacediffError(f"batch size must be at least 1, got {s.batch_size}")
    latent = bool(getattr(net, "latent", False))
    # latents are not in [-1, 1]: no clipping of the x0 estimate (the decoder clamps)
    overrides: dict[str, Any] = {"clip_sample": False} if latent else {}
    make_scheduler(s.sampler, diffusion, s.steps, **overrides)  # validate before any work
    device = next(net.parameters()).device
    if latent and callback is not None:
        callback = decoded_callback(net, callback)
    shape = (net.config.in_channels, net.config.sample_size, net.config.sample_size)
    if cond is not None:
        cond = cond.to(device).float()
        cond = cond.expand(n, -1) if cond.ndim == 1 or cond.shape[0] == 1 else cond
        if cond.shape[0] != n:
            raise ValueError(f"cond has {cond.shape[0]} rows for {n} images")

    out = []
    was_training = net.training
    net.eval()
    bar = tqdm(total=n, desc=f"sampling ({s.sampler}, {s.steps} steps)", unit="img",
               disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, n, s.batch_size):
                m = min(s.batch_size, n - start)
                gens = generators_for(s.seed, start, m)
                x = initial_noise(gens, shape, device) if noise is None else \
                    noise[start:start + m].to(device)
                part = None if cond is None else cond[start:start + m]
                den = guided_denoiser(net, part, s.guidance, s.guidance_rescale)
                sched = make_scheduler(s.sampler, diffusion, s.steps, **overrides)
                x = sample_loop(den, sched, x, gens, eta=s.eta, callback=callback,
                                clamp=not latent)
                out.append(model_to_uint8(net.decode(x) if latent else x).cpu())
                bar.update(m)
    finally:
        bar.close()
        net.train(was_training)
    return torch.cat(out)


def decoded_callback(net: torch.nn.Module, callback: Callback) -> Callback:
    """A latent model's ``callback``: x_t and x0 decoded to images first, so previews and
    process figures need no latent case."""

    def decoded(i: int, total: int, t: torch.Tensor, xt: torch.Tensor,
                x0: torch.Tensor) -> None:
        callback(i, total, t, net.decode(xt), net.decode(x0))

    return decoded
