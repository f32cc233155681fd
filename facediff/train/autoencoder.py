"""The autoencoder task: trains the first stage of latent diffusion with the same trainer.

Everything but the loss is facediff.train.trainer's (accelerate, the lock, exact resume,
checkpoints on SIGTERM and at the time limit, EMA, the non-finite guard, TensorBoard, the
progress bar). This subclass swaps the task's hooks: the networks (autoencoder and patch
discriminator, facediff.model.autoencoder.AutoencoderTraining), the batch's draws (images
and flips), the loss, the preview (originals above their reconstructions), the held-out
loss and the export (the autoencoder alone, as ``config.yaml`` + ``weights.safetensors``
with ``task: autoencoder``; ``facediff train --autoencoder`` and ``load_autoencoder`` read
it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from facediff.config import Config, latent_factor
from facediff.data import ImageSet
from facediff.data.transforms import model_to_uint8, uint8_to_model
from facediff.errors import ConfigError
from facediff.model.autoencoder import build_training_module, reconstruction_loss
from facediff.train.trainer import GlobalBatch, Trainer, TrainResult, step_seed

PREVIEW_SEED = 4242  # the training images the preview grid shows, the same every time


class AutoencoderTrainer(Trainer):
    """``AutoencoderTrainer(cfg, run_dir).fit()`` for a config with ``task: autoencoder``."""

    task = "autoencoder"
    preview_tag = "reconstructions"

    def __init__(self, cfg: Config, run_dir: str | Path, data: ImageSet | None = None,
                 progress: bool = True) -> None:
        if cfg.train.eval_every:
            raise ConfigError("train.eval_every scores diffusion samples; an autoencoder is "
                              "scored with: facediff autoencoder eval")
        super().__init__(cfg, run_dir, data=data, progress=progress)
        self._reset_gan_sums()

    def _build_network(self) -> None:
        tc = self.cfg.train
        torch.manual_seed(tc.seed)
        self.net = build_training_module(self.cfg)
        self.objective = None
        self.channels_last = self.device.type == "cuda" if tc.channels_last is None \
            else tc.channels_last
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def draw_batch(self, step: int) -> GlobalBatch:
        """The global batch's images, flips, crops and (AutoencoderKL) posterior noise, seeded
        by step as for diffusion: the same whatever the number of processes or resumes."""
        tc, ae = self.cfg.train, self.cfg.autoencoder
        g = torch.Generator().manual_seed(step_seed(tc.seed, step))
        idx = torch.from_numpy(self.stream.batch(step))
        flip = torch.rand(tc.batch_size, generator=g) < 0.5
        crops = None
        side = self.cfg.data.image_size
        if ae.train_crop:
            crops = torch.randint(0, side - ae.train_crop + 1, (tc.batch_size, 2), generator=g)
            side = ae.train_crop
        noise = torch.zeros(0)
        if ae.kind == "kl":
            f = latent_factor(self.cfg)
            noise = torch.randn((tc.batch_size, ae.latent_channels, side // f, side // f),
                                generator=g)
        return GlobalBatch(idx, noise, torch.zeros(0), flip, None, crops)

    def images(self, batch: GlobalBatch, sel: slice) -> torch.Tensor:
        """The batch's images (flipped where drawn), cropped where ``train_crop`` says."""
        x = super().images(batch, sel)
        if batch.crops is None:
            return x
        k = self.cfg.autoencoder.train_crop
        return torch.stack([im[:, top:top + k, left:left + k] for im, (top, left) in
                            zip(x, batch.crops[sel].tolist(), strict=True)])

    def micro_loss(self, batch: GlobalBatch, sel: slice, micro_index: int,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the whole loss, the reconstruction loss to log)."""
        x = self.images(batch, sel)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        noise = batch.noise[sel].to(self.device) if batch.noise.numel() else None
        out = self.train_net(x, adversarial=self.step >= self.cfg.autoencoder.disc_start,
                             noise=noise)
        sums = self._gan_sums
        sums[0] += out["disc"]
        sums[2] += 1
        if "adv" in out:
            sums[1] += out["adv"]
            sums[3] += 1
        return out["loss"], out["rec"]

    def _train_row(self, window: Any, grad_norm: torch.Tensor | None,
                   bar: Any) -> dict[str, Any]:
        """The logged row, with the discriminator's hinge loss and the autoencoder's
        adversarial term (means since the last row; the adversarial one once switched on)."""
        row = super()._train_row(window, grad_norm, bar)
        d, adv, n_d, n_adv = self._gan_sums
        if n_d:
            row["disc_loss"] = float(self.accelerator.reduce(d, "mean")) / n_d
        if n_adv:
            row["adv_loss"] = float(self.accelerator.reduce(adv, "mean")) / n_adv
        self._reset_gan_sums()
        return row

    def _reset_gan_sums(self) -> None:
        zero = torch.zeros((), device=self.device)
        self._gan_sums: list[Any] = [zero, zero.clone(), 0, 0]

    def warm_start(self, model: str) -> None:
        """Start this new run from an autoencoder's EMA weights (``train.init``: its export,
        or its run), so an autoencoder trains on in pieces even when a run dir is lost: the
        autoencoder and its EMA begin there; the discriminator, the optimizer, the step (and
        so the adversarial warm-up, ``autoencoder.disc_start``) begin anew. It must be the
        same autoencoder (kind, widths, latent channels) at the same image size."""
        from facediff.train import checkpoint as ckpt
        from facediff.train.trainer import check_resumable

        saved, weights, source = ckpt.read_model(model)
        if saved.task != "autoencoder":
            raise ConfigError(f"cannot start an autoencoder run from {source}: it is not an "
                              "autoencoder")
        check_resumable(saved, self.cfg, init=source)
        ae = {k: v for k, v in weights.items() if k.startswith("ae.")}  # a checkpoint's EMA
        trained = ae or {f"ae.{k}": v for k, v in weights.items()}  # an export (no "ae.")
        self._start_from(model, saved, source, trained, keep="disc.")

    def export_state(self) -> dict[str, torch.Tensor]:
        """The EMA autoencoder's weights (the discriminator stays in the checkpoints)."""
        return {k[len("ae."):]: v for k, v in self.ema.named_state(self.net).items()
                if k.startswith("ae.")}

    @torch.no_grad()
    def preview(self) -> tuple[torch.Tensor, int | None]:
        """``train.sample_n`` fixed images (held-out ones when there are) in one row and their
        EMA reconstructions in the row below."""
        pool = self.val_images if self.val_images is not None else self.train_images
        n = min(self.cfg.train.sample_n, len(pool))
        idx = np.sort(np.random.default_rng(PREVIEW_SEED).permutation(len(pool))[:n])
        real = pool[torch.from_numpy(idx).to(pool.device)].cpu()
        ae = self._ema_net().ae
        x = uint8_to_model(real).to(self.device)
        with self.accelerator.autocast():
            y = ae.decode(ae.encode(x)[0]).float().clamp(-1, 1)
        return torch.cat([real, model_to_uint8(y).cpu()]), n

    @torch.no_grad()
    def _val_loss(self) -> float:
        """The EMA autoencoder's reconstruction loss (L1 + SSIM term) on the held-out images,
        each process scoring its share."""
        assert self.val_images is not None
        ae = self._ema_net().ae
        n = len(self.val_images)
        mine = torch.arange(self.rank, n, self.world)
        per_batch = max(1, self.micro // self.world)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, len(mine), per_batch):
            idx = mine[start:start + per_batch]
            x = uint8_to_model(self.val_images[idx]).to(self.device)
            with self.accelerator.autocast():
                y = ae.decode(ae.encode(x)[0])
            loss = reconstruction_loss(x, y, ssim_weight=self.cfg.autoencoder.ssim_weight)
            total += loss.double() * len(idx)
        return float(self.accelerator.reduce(total, "sum")) / n

    def _evaluate(self) -> dict[str, object]:
        return {}


def train_autoencoder(cfg: Config, run_dir: str | Path, *, data: ImageSet | None = None,
                      progress: bool = True, until_step: int | None = None,
                      time_limit_min: float | None = None) -> TrainResult:
    """Train (or resume) the autoencoder run in ``run_dir`` (see ``Trainer.fit``)."""
    return AutoencoderTrainer(cfg, run_dir, data=data, progress=progress).fit(
        until_step, time_limit_min)
