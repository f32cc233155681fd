"""The training objective: noise schedule, prediction target and loss weighting.

Forward process (Ho et al. 2020):  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
SNR(t) = abar_t / (1 - abar_t). The network predicts one of
    eps  (Ho et al.),   v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0  (Salimans & Ho 2022),   x0.
Min-SNR-gamma (Hang et al. 2023) weights each timestep's x0-space loss by min(SNR, gamma);
expressed in the network's own target space that is
    eps: min(SNR, gamma) / SNR,   v: min(SNR, gamma) / (SNR + 1),   x0: min(SNR, gamma).
Timesteps are drawn uniformly from all of 0..T-1, so the step every sampler starts at
(t = T-1) is trained too.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from facediff.config import DiffusionConfig

BETA_SCHEDULES = {
    "linear": "linear",
    "cosine": "squaredcos_cap_v2",
    "scaled_linear": "scaled_linear",
    "sigmoid": "sigmoid",
}
PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def schedule_kwargs(cfg: DiffusionConfig) -> dict[str, Any]:
    """The diffusers scheduler arguments that every scheduler of this model shares."""
    return {
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_schedule": BETA_SCHEDULES[cfg.beta_schedule],
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "prediction_type": PREDICTION_TYPES[cfg.prediction],
        "rescale_betas_zero_snr": cfg.rescale_zero_snr,
    }


def training_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(**schedule_kwargs(cfg))


class DiffusionObjective:
    """Draws timesteps, noises images and computes the weighted loss of a network."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.scheduler = training_scheduler(cfg)
        self.num_timesteps = cfg.num_train_timesteps

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Uniform over 0..T-1 inclusive."""
        return torch.randint(0, self.num_timesteps, (n,), generator=generator)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.cfg.prediction
        if p == "eps":
            return noise
        if p == "v":
            return self.scheduler.get_velocity(x0, noise, t)
        return x0

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.loss_weighting == "none":
            return torch.ones(t.shape, device=t.device)
        snr = compute_snr(self.scheduler, t).float()
        gamma = self.cfg.snr_gamma
        clipped = snr.clamp(max=gamma)
        p = self.cfg.prediction
        if p == "eps":  # min(SNR, g) / SNR, written so that SNR -> 0 gives exactly 1
            w = torch.where(snr < gamma, torch.ones_like(snr), gamma / snr)
        elif p == "v":
            w = clipped / (snr + 1)
        else:
            w = clipped
        # zero terminal SNR: the weight would vanish and t = T-1 would go untrained
        return torch.where(snr == 0, torch.ones_like(w), w)

    def loss(
        self, net: torch.nn.Module, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, *,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted MSE of the network's prediction, one value per sample."""
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        pred = (net(xt, t) if labels is None else net(xt, t, labels)).sample
        target = self.target(x0, noise, t)
        per_sample = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
        return per_sample * self.weights(t)


def predicted_x0(pred: torch.Tensor, xt: torch.Tensor, alpha_bar: torch.Tensor | float,
                 prediction: str) -> torch.Tensor:
    """The network's estimate of x_0 from its prediction at x_t (inverting ``target``):
        eps: x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar),
        v:   x_0 = sqrt(abar) x_t - sqrt(1 - abar) v,
        x0:  x_0 = the prediction.
    ``prediction`` is ours ("eps", "v", "x0") or diffusers' name for it.
    """
    abar = torch.as_tensor(alpha_bar, dtype=torch.float32, device=xt.device)
    kind = {v: k for k, v in PREDICTION_TYPES.items()}.get(prediction, prediction)
    pred, xt = pred.float(), xt.float()
    if kind == "x0":
        return pred
    if kind == "v":
        return abar.sqrt() * xt - (1 - abar).sqrt() * pred
    if kind == "eps":
        return (xt - (1 - abar).sqrt() * pred) / abar.sqrt().clamp(min=1e-4)
    raise ValueError(f"unknown prediction type {prediction!r}")
