"""The training loop: accelerate for devices, mixed precision and DDP; EMA; checkpoints; logs.

Determinism and exact resume: everything random in a step (the batch's images, their flips,
noise and timesteps) is drawn from a generator seeded by (seed, step) for the whole global
batch, and each process takes its own slice. So a run resumed at step N continues exactly as
if it had never stopped, and N processes see disjoint parts of the batch one process would.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from facediff.config import Condition, Config, run_task, sample_shape
from facediff.data import ImageSet, load_data
from facediff.data.conditions import UNSPECIFIED
from facediff.data.latents import encode_images, latent_stats
from facediff.data.transforms import uint8_to_model
from facediff.device import cpu_has_bf16
from facediff.diffusion.objectives import DiffusionObjective
from facediff.diffusion.samplers import SamplingSettings
from facediff.diffusion.sampling import check_sampling, generate
from facediff.errors import ConfigError, FacediffError
from facediff.model import build_net, count_parameters
from facediff.model.autoencoder import FirstStage, load_autoencoder, weights_digest
from facediff.model.unet import set_attention
from facediff.train import checkpoint as ckpt
from facediff.train.ema import HalfLifeEMA
from facediff.train.lock import RunLock, RunLockedError
from facediff.viz.grid import make_grid

log = logging.getLogger(__name__)

CSV_FIELDS = ["step", "images", "loss", "lr", "grad_norm", "img_per_s", "val_loss", "fid",
              "kid", "precision", "recall", "eval_n", "time", "skipped", "disc_loss", "adv_loss"]
# a logged training loss above SPIKE x the best so far: the weights are finite but ruined
# (a learning rate far too high); checkpoints are held back until it comes down
SPIKE = 5.0
EVAL_SEED = 777  # the samples scored during training: the same seeds every time
SAMPLE_SEED = 12345  # fixed noise for the progress grids
AUTOENCODER_DIR = "autoencoder"  # a latent run's copy of its autoencoder


@dataclass
class GlobalBatch:
    """One optimizer step's draws for the whole global batch (every process holds it all and
    takes its own slices)."""

    idx: torch.Tensor  # image indices
    noise: torch.Tensor
    timesteps: torch.Tensor
    flip: torch.Tensor  # horizontal flips (used when data.hflip)
    labels: torch.Tensor | None  # conditions after dropout (UNSPECIFIED), on the device
    crops: torch.Tensor | None = None  # (B, 2) top-left corners of training crops, if any


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    # "finished", "early_stopped", "interrupted", "paused", "time_limit", "diverged"
    reason: str
    last_loss: float | None
    img_per_s: float | None
    best_val_loss: float | None = None
    main_process: bool = True
    message: str = ""  # why it stopped, for "diverged"
    skipped_steps: int = 0  # steps skipped for NaN/inf loss or gradients, in the whole run


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if cpu_has_bf16():
        return "bf16"
    return "no"


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)


MACHINES = "machines.jsonl"  # RUN/logs/: the machines a run trained on, one line a session


def _cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), with its core count."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def check_resumable(saved: Config, new: Config, *, init: str | None = None) -> None:
    """A run may change training settings on resume, not what the network is or learns;
    ``init``: ``saved`` is the model a new run warm-starts from (``train.init``), which must
    be the same network trained on the same conditions."""
    a, b = saved.distill.teacher_digest, new.distill.teacher_digest
    if run_task(saved) == run_task(new) == "distill" and a != b:
        raise ConfigError(f"cannot resume with a different teacher: this run distils the model "
                          f"whose weights digest is {a[:12]} ({saved.distill.teacher}), not "
                          f"{b[:12]} (start a new run dir to distil another)")
    fixed = {
        "model": (saved.model, new.model),
        "diffusion": (saved.diffusion, new.diffusion),
        "data.image_size": (saved.data.image_size, new.data.image_size),
        "data.channels": (saved.data.channels, new.data.channels),
        "conditions": (saved.conditions, new.conditions),  # names, kinds and value order
        "task": (run_task(saved), run_task(new)),
        "autoencoder": (_first_stage_identity(saved), _first_stage_identity(new)),
        "distillation": (_distill_identity(saved), _distill_identity(new)),
    }
    for name, (a, b) in fixed.items():
        if a != b and init is not None:
            raise ConfigError(f"cannot start from {init} (train.init): {_differences(name, a, b)}"
                              " differ (the model's, this run's)")
        if a != b:
            raise ConfigError(
                f"cannot resume with a different {name}: the checkpoint was trained with "
                f"{a} (start a new run dir to change it)"
            )


def _differences(name: str, a: object, b: object) -> str:
    """``name.field: a vs b`` for each field of two config sections that differs."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return "; ".join(f"{name}.{f.name}: {getattr(a, f.name)} vs {getattr(b, f.name)}"
                         for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name))
    return f"{name}: {a} vs {b}"


def _first_stage_identity(cfg: Config) -> tuple[object, ...]:
    """What makes the autoencoder (trained, or frozen under a latent model) the same one."""
    ae = cfg.autoencoder
    latent = cfg.task == "diffusion"  # the frozen one's weights and normalisation
    return (ae.kind, ae.block_out_channels, ae.blocks_per_level, ae.latent_channels,
            (ae.digest, ae.shift, ae.scale) if latent else None)


def _distill_identity(cfg: Config) -> str | None:
    """What fixes a distillation's rounds and targets (None: not a distillation)."""
    d = cfg.distill
    if run_task(cfg) != "distill":
        return None
    return (f"DDIM {d.start_steps} -> {d.steps} steps, {d.steps_per_round} steps per round, "
            f"guidance {d.guidance}")


def rank_slice(micro_index: int, micro: int, rank: int, world: int) -> slice:
    """This process's part of micro-batch ``micro_index`` of the global batch."""
    per_rank = micro // world
    start = micro_index * micro + rank * per_rank
    return slice(start, start + per_rank)


class BatchStream:
    """Global batch ``k`` = the next B indices of an endless stream of per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perm_epoch = -1
        self._perm = np.arange(0)

    def _perm_for(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def batch(self, step: int) -> np.ndarray:
        out: list[np.ndarray] = []
        pos, need = step * self.batch_size, self.batch_size
        while need:
            epoch, off = divmod(pos, self.n)
            take = min(need, self.n - off)
            out.append(self._perm_for(epoch)[off:off + take])
            pos, need = pos + take, need - take
        return np.concatenate(out)

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n


_TASK_WHAT = {"diffusion": "a diffusion model", "autoencoder": "an autoencoder",
              "distill": "a few-step model distilled from a teacher"}
_TASK_COMMAND = {"diffusion": "facediff train", "autoencoder": "facediff autoencoder train",
                 "distill": "facediff distill"}


class Trainer:
    """Trains one run dir: ``Trainer(cfg, run_dir).fit()``; the same call resumes it.

    What a run learns is its task: this class trains a diffusion model (in pixels, or on a
    frozen autoencoder's latents); facediff.train.autoencoder's subclass trains the
    autoencoder, facediff.train.distill's a few-step student of a trained model. A task
    replaces the hooks ``_build_network``, ``draw_batch``, ``micro_loss``, ``preview``,
    ``_val_loss``, ``export_state`` (and ``_evaluate``); the rest (devices, the lock, resume,
    checkpoints, EMA, the non-finite guard, signals, the time limit, logs) is this class's,
    for every task.
    """

    task = "diffusion"
    preview_tag = "samples"  # the progress grid's TensorBoard tag

    def __init__(
        self, cfg: Config, run_dir: str | Path, data: ImageSet | None = None,
        progress: bool = True, *, autoencoder: FirstStage | None = None,
    ) -> None:
        task = run_task(cfg)
        if task != self.task:
            why = "distill.teacher_digest is set" if task == "distill" else f"task: {task}"
            raise ConfigError(f"this config trains {_TASK_WHAT[task]} ({why}): "
                              f"use {_TASK_COMMAND[task]}")
        check_sampling(cfg.sample, cfg.diffusion)  # the progress grids' sampler, before work
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self._setup_processes()
        self.first_stage = self._first_stage(autoencoder)
        self._init_latent_stats()
        self._load_data(data)
        self._build_network()
        self._build_optimizer()
        self._build_ema()

        # Training state (what a checkpoint restores, with the weights and the optimizer).
        self.step = 0
        self.best_val: float | None = None
        self.bad_vals = 0
        self.best_fid: float | None = None
        self.last_loss: float | None = None
        self.img_per_s: float | None = None
        self.skipped_steps = 0  # steps skipped for NaN/inf loss or gradients, in all
        self.bad_in_row = 0  # ... and in a row, up to now
        self.best_loss: float | None = None  # the lowest logged training loss
        self.spike_since: int | None = None  # the step the loss blew up at (not back since)
        self.good_checkpoint: int | None = None  # the newest checkpoint written healthy
        self.last_step_finite = True
        self._eval_state: tuple[Any, Any] | None = None  # (feature net, reference)
        if cfg.train.eval_every and self.accelerator.is_main_process:
            from facediff.eval.features import default_weights

            default_weights()  # no Inception network: say so now, not hours into the run
        self._stop_signal: int | None = None
        self.saved_step: int | None = None
        self.writer: Any = None

    # ---- setup ----------------------------------------------------------------------------
    def _setup_processes(self) -> None:
        """Accelerate: the device, mixed precision, how many processes and which one this is."""
        tc = self.cfg.train
        # several processes without CUDA (torchrun/accelerate launch on CPUs): DDP over gloo
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(tc.mixed_precision),
            gradient_accumulation_steps=tc.grad_accum,
            cpu=multi_cpu,
        )
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        if tc.batch_size % (self.world * tc.grad_accum):
            raise ConfigError(
                f"train.batch_size {tc.batch_size} must be divisible by processes x "
                f"grad_accum = {self.world} x {tc.grad_accum}"
            )
        self.micro = tc.batch_size // tc.grad_accum  # global micro-batch
        self.device = self.accelerator.device

    def _first_stage(self, given: FirstStage | None) -> FirstStage | None:
        """A latent run's autoencoder: the one given (``--autoencoder``), else the copy the
        run keeps in RUN/autoencoder/ (resuming); its digest must be the config's."""
        ae = self.cfg.autoencoder
        if self.cfg.task != "diffusion" or ae.kind == "none":
            return None
        if given is None:
            if not (self.run_dir / AUTOENCODER_DIR).is_dir():
                raise ConfigError("a latent diffusion run needs its autoencoder: pass "
                                  "--autoencoder DIR (a facediff autoencoder run or export)")
            given, _, _ = load_autoencoder(self.run_dir / AUTOENCODER_DIR)
        digest = weights_digest(given.state_dict())
        if ae.digest is not None and ae.digest != digest:
            raise ConfigError(f"the autoencoder's weights differ from the ones this run was "
                              f"trained on (digest {digest[:12]}, the run's "
                              f"{ae.digest[:12]}): start a new run dir")
        ae.digest = digest
        return given.to(self.device).eval().requires_grad_(False)

    def _init_latent_stats(self) -> None:
        """A latent run that will warm-start (``train.init``) normalises its latents as the
        model it starts from did (its per-channel shift and scale), not as measured anew."""
        ae = self.cfg.autoencoder
        if self.first_stage is None or not self.cfg.train.init or (ae.shift and ae.scale):
            return
        if ckpt.list_checkpoints(self.run_dir):
            return  # a resume: the run's own config holds them
        init = ckpt.read_model(self.cfg.train.init)[0].autoencoder
        ae.shift, ae.scale = init.shift, init.scale

    def _load_data(self, data: ImageSet | None) -> None:
        """The dataset's images (and labels) on the device, less a seeded held-out part; the
        run's condition spec comes from the data. A latent run holds the images' latents
        instead (each image and its mirror image, normalised per channel)."""
        cfg, tc = self.cfg, self.cfg.train
        if data is None:
            data = load_data(cfg.data, progress=self.progress and
                             self.accelerator.is_main_process)
        self.data = data
        if cfg.data.face_template == "auto":  # recorded: photos are aligned as the data was
            from facediff.faces.templates import template_name

            cfg.data.face_template = template_name(cfg.data, data.kind)
        cfg.conditions = [Condition(c.name, c.kind, list(c.values))
                          for c in data.spec.conditions] if data.spec is not None else []
        if self.first_stage is not None:
            images = self._latents(data)
        else:
            images = torch.from_numpy(np.array(data.images))  # off the cache's memory map
        n_val = round(len(images) * cfg.data.val_fraction)
        if cfg.data.val_fraction > 0 and n_val == 0:
            n_val = 1
        if n_val >= len(images):
            raise FacediffError(
                f"data.val_fraction {cfg.data.val_fraction} leaves no training images "
                f"out of {len(images)}"
            )
        order = np.random.default_rng([tc.seed, 999]).permutation(len(images))
        val_idx = torch.from_numpy(order[:n_val])
        train_idx = torch.from_numpy(np.sort(order[n_val:]))
        self.val_images = images[val_idx] if n_val else None
        self.train_images = (images[train_idx] if n_val else images).to(self.device)
        self.train_labels = self.val_labels = None
        if cfg.conditions and data.labels is not None:
            labels = torch.from_numpy(data.labels.astype(np.int64))
            if n_val:
                self.val_labels = labels[val_idx].to(self.device)
                labels = labels[train_idx]
            self.train_labels = labels.to(self.device)
        self.stream = BatchStream(len(self.train_images), tc.batch_size, tc.seed)
        self.sample_shape = sample_shape(cfg)

    def _latents(self, data: ImageSet) -> torch.Tensor:
        """(N, 2, C, h, w) float latents of the images and their mirror images (the latent
        cache; (N, 1, ...) without ``data.hflip``), normalised with the per-channel shift and
        scale measured on them (all the dataset's images, held-out ones included; stored in
        the config)."""
        assert self.first_stage is not None
        ae = self.cfg.autoencoder
        # rank 0 encodes and writes the cache first; the other ranks then read the same file
        with self.accelerator.main_process_first():
            lat = encode_images(self.first_stage, data.images, self.cfg.data, ae.digest or "",
                                device=self.device,
                                progress=self.progress and self.accelerator.is_main_process)
        shift, scale = latent_stats(lat)
        if ae.shift and ae.scale and (not np.allclose(ae.shift, shift, rtol=1e-4, atol=1e-5)
                                      or not np.allclose(ae.scale, scale, rtol=1e-4)):
            log.warning("the latents' statistics changed (the data changed?): keeping the "
                        "run's shift %s and scale %s", ae.shift, ae.scale)
        elif not (ae.shift and ae.scale):
            ae.shift, ae.scale = shift, scale
        s = torch.tensor(ae.shift).reshape(1, 1, -1, 1, 1)
        k = torch.tensor(ae.scale).reshape(1, 1, -1, 1, 1)
        return torch.from_numpy(np.array(lat, dtype=np.float32)).sub_(s).mul_(k)

    def _build_network(self) -> None:
        """The network (seeded), the objective it learns, its memory layout."""
        tc = self.cfg.train
        torch.manual_seed(tc.seed)
        self.net = build_net(self.cfg)  # U-Net (+ condition embedding): saved and sampled
        if self.first_stage is not None:  # a latent model: its frozen autoencoder
            self.net.first_stage.load_state_dict(self.first_stage.state_dict())
        set_attention(self.net, tc.attention, self.device)
        self.objective = DiffusionObjective(self.cfg.diffusion)
        self.channels_last = self.device.type == "cuda" if tc.channels_last is None \
            else tc.channels_last
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def _build_optimizer(self) -> None:
        """AdamW with warm-up and decay; accelerate wraps the network for training (DDP) as
        ``train_net``, which ``torch.compile`` may compile."""
        tc = self.cfg.train
        # one fused kernel (CUDA) or multi-tensor ops (elsewhere), not a loop over parameters
        opt_kwargs: dict[str, Any] = {"fused": True} if self.device.type == "cuda" \
            else {"foreach": True}
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas),
            weight_decay=tc.weight_decay, **opt_kwargs,
        )
        self.lr_scheduler = get_scheduler(
            {"constant": "constant_with_warmup"}.get(tc.lr_schedule, tc.lr_schedule),
            self.optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.max_steps,
        )
        self.train_net, self.optimizer = self.accelerator.prepare(self.net, self.optimizer)
        if tc.compile:  # the training forward only; self.net (saved, sampled) stays as it is
            self.train_net = torch.compile(self.train_net)

    def _build_ema(self) -> None:
        """The EMA of the weights (its length in images seen) and a network to hold it."""
        tc = self.cfg.train
        self.ema = HalfLifeEMA(self.net.parameters(), tc.batch_size, tc.ema_halflife_images,
                               tc.ema_rampup)
        self.ema.to(self.device)
        self.ema_net = copy.deepcopy(self.net).eval().requires_grad_(False)

    # ---- state ----------------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "images_seen": self.step * self.cfg.train.batch_size,
            "epoch": self.stream.epoch_of(self.step),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "ema_optimization_step": self.ema.optimization_step,
            "rng_cpu": torch.get_rng_state(),
            "best_val": self.best_val,
            "bad_vals": self.bad_vals,
            "best_fid": self.best_fid,
            "skipped_steps": self.skipped_steps,
            "bad_in_row": self.bad_in_row,
            "best_loss": self.best_loss,
            "world_size": self.world,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:  # fp16 loss scale, so a resumed run does not re-warm it
            state["grad_scaler"] = scaler.state_dict()
        return state

    def resume_from(self, path: Path, loaded: dict[str, Any] | None = None) -> None:
        """Restore the checkpoint at ``path`` (``loaded``: already read and verified)."""
        c = loaded if loaded is not None else ckpt.load_checkpoint(path)
        check_resumable(c["config"], self.cfg)
        was, tc = c["config"].train, self.cfg.train  # what the run started from stays
        tc.init, tc.init_digest, tc.init_images = was.init, was.init_digest, was.init_images
        self.net.load_state_dict(c["model"])
        self.ema.load_named_state(self.net, c["ema"])
        s = c["state"]
        self.optimizer.load_state_dict(s["optimizer"])
        self.lr_scheduler.load_state_dict(s["lr_scheduler"])
        # the config may change optimiser settings on resume (--set train.lr=...): apply them
        tc = self.cfg.train
        self.lr_scheduler.base_lrs = [tc.lr for _ in self.lr_scheduler.base_lrs]
        for group, lam in zip(self.optimizer.param_groups, self.lr_scheduler.lr_lambdas,
                              strict=True):
            group.update(initial_lr=tc.lr, lr=tc.lr * lam(self.lr_scheduler.last_epoch),
                         weight_decay=tc.weight_decay, betas=tuple(tc.adam_betas))
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and s.get("grad_scaler"):
            scaler.load_state_dict(s["grad_scaler"])
        self.ema.optimization_step = s["ema_optimization_step"]
        torch.set_rng_state(s["rng_cpu"])
        if "rng_cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["rng_cuda"])
        self.step = int(s["step"])
        self.best_val, self.bad_vals = s.get("best_val"), int(s.get("bad_vals", 0))
        self.best_fid = s.get("best_fid")
        self.skipped_steps = int(s.get("skipped_steps", 0))
        self.bad_in_row = int(s.get("bad_in_row", 0))
        self.best_loss = s.get("best_loss")
        if self.accelerator.is_main_process:
            log.info("resumed %s at step %d", path, self.step)

    def _on_main(self, write: Any) -> None:
        """Run ``write()`` on rank 0; a write error there is raised on every rank (so none
        is left waiting at a collective), printed once by rank 0."""
        problem: list[str | None] = [None]
        if self.accelerator.is_main_process:
            try:
                write()
            except ckpt.WriteError as e:
                problem = [str(e)]
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(problem)
        if problem[0] is not None:
            raise ckpt.WriteError(problem[0])

    def _healthy(self) -> bool:
        """No step skipped just now and the loss not blown up (a finite loss more than
        ``SPIKE`` times the best so far means weights that are finite but ruined): only then
        are checkpoints and exports written. The same on every rank (reduced losses)."""
        if self.bad_in_row:
            return False
        return self.last_loss is None or self.best_loss is None or \
            self.last_loss <= SPIKE * self.best_loss

    def _finite(self) -> bool:
        """Whether the weights and the EMA are all finite (the same answer on every rank: the
        weights are identical there)."""
        return all(bool(torch.isfinite(p).all()) for p in
                   [*self.net.parameters(), *self.ema.shadow_params])

    def _checkpoint(self) -> None:
        """A checkpoint of this step; weights that are not finite are never written
        (``_Diverged``)."""
        acc = self.accelerator
        if not self._finite():
            raise _Diverged(f"the weights became NaN or inf by step {self.step}")
        if self.world > 1:  # EMA must be identical on every rank before it is written once
            sums = acc.gather(self.ema.checksum().reshape(1).to(self.device))
            if not torch.all(sums == sums[0]):
                raise RuntimeError(f"EMA weights differ between ranks: {sums.tolist()}")
        acc.wait_for_everyone()
        self._on_main(lambda: ckpt.save_checkpoint(
            self.run_dir, self.step, self.cfg, model_state=self.net.state_dict(),
            ema_state=self.ema.named_state(self.net), train_state=self._train_state(),
            keep=self.cfg.train.keep_checkpoints,
        ))
        self.saved_step = self.step
        self.good_checkpoint = self.step
        acc.wait_for_everyone()

    def export_state(self) -> dict[str, torch.Tensor]:
        """What an export holds: the EMA weights of the network (the task's hook)."""
        return self.ema.named_state(self.net)

    def _export(self) -> None:
        if not self._finite():
            raise _Diverged(f"the weights became NaN or inf by step {self.step}")
        self._on_main(lambda: ckpt.export_model(self.run_dir / ckpt.EXPORT_DIR, self.cfg,
                                                self.export_state(),
                                                step=self.step))

    # ---- logs and samples -----------------------------------------------------------------
    def _open_logs(self) -> None:
        if not self.accelerator.is_main_process:
            return
        from torch.utils.tensorboard import SummaryWriter

        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(logs), purge_step=self.step or None)
        # the run's full config, readable in TensorBoard's Text tab (indented: Markdown code)
        self.writer.add_text("config", "    " + self.cfg.to_yaml().replace("\n", "\n    "),
                             self.step)
        # appended, never rewritten: rows a crashed run wrote after the checkpoint it resumes
        # from stay, and readers drop them (facediff.viz.training.read_metrics)
        self.csv_path = logs / "metrics.csv"
        self.csv_fields = CSV_FIELDS
        if self.csv_path.is_file() and self.csv_path.stat().st_size:
            with open(self.csv_path, newline="") as f:
                self.csv_fields = next(csv.reader(f), None) or CSV_FIELDS
        else:
            self._append_csv(None)

    def _log(self, row: dict[str, Any]) -> None:
        self._on_main(lambda: self._write_row(row))  # a failed write reaches every rank

    def _write_row(self, row: dict[str, Any]) -> None:
        tags = {"val_loss": "val/loss", "fid": "eval/fid", "kid": "eval/kid",
                "precision": "eval/precision", "recall": "eval/recall"}
        for k in ("loss", "lr", "grad_norm", "img_per_s", "skipped", "disc_loss", "adv_loss",
                  *tags):
            if row.get(k) is not None:
                self.writer.add_scalar(tags.get(k, f"train/{k}"), row[k], row["step"])
        self._append_csv(row)

    def _append_csv(self, row: dict[str, Any] | None) -> None:
        """One row (None: the header) appended to metrics.csv."""
        try:
            with open(self.csv_path, "a+", newline="") as f:
                if f.tell():  # a row cut by a crash or a full disk: start a new line
                    f.seek(f.tell() - 1)
                    if f.read(1) != "\n":
                        f.write("\n")
                w = csv.DictWriter(f, self.csv_fields, extrasaction="ignore")
                if row is None:
                    w.writeheader()
                else:
                    w.writerow({k: row.get(k, "") for k in self.csv_fields})
        except OSError as e:
            raise ckpt.WriteError(f"cannot write {self.csv_path}: {e.strerror or e}") from e

    def _ema_net(self) -> torch.nn.Module:
        self.ema.copy_to(self.ema_net.parameters())
        return self.ema_net

    def _sample_grid(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            try:
                self._write_grid()
            except Exception as e:  # a preview must never kill (or hang) the run
                log.warning("could not write the sample grid at step %d: %s", self.step, e)
        acc.wait_for_everyone()

    def preview(self) -> tuple[torch.Tensor, int | None]:
        """The progress grid's uint8 NHWC images and images per row (None: near-square):
        ``train.sample_n`` EMA samples from fixed noise (the task's hook)."""
        n = self.cfg.train.sample_n
        # deterministic (eta 0) whatever sample.eta says, as the grids always were: the same
        # noise every time, so the grids show the model change, not the sampler's noise
        settings = SamplingSettings(seed=SAMPLE_SEED, batch_size=n, eta=0.0).resolve(
            self.cfg.sample)
        return generate(self._ema_net(), self.cfg.diffusion, n, settings), None

    def _write_grid(self) -> None:
        imgs, nrow = self.preview()
        grid = make_grid(imgs, nrow)
        out = self.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        grid.save(out / f"step-{self.step:07d}.png")
        self.writer.add_image(self.preview_tag, np.asarray(grid), self.step, dataformats="HWC"
                              if grid.mode == "RGB" else "HW")

    @torch.no_grad()
    def _val_loss(self) -> float:
        """Loss of the EMA network on the held-out images, with fixed noise and timesteps."""
        assert self.val_images is not None
        net = self._ema_net()
        n = len(self.val_images)
        g = torch.Generator().manual_seed(step_seed(self.cfg.train.seed, -1))
        shape = self.sample_shape if self.first_stage is not None else \
            self.val_images.shape[1:]  # images: H, W, C as stored
        noise_all = torch.randn((n, *shape), generator=g)
        t_all = self.objective.sample_timesteps(n, g)
        # each process scores its share; the all-reduced sum is the same on every rank, so
        # every rank takes the same early-stopping decision
        mine = torch.arange(self.rank, n, self.world)
        per_batch = max(1, self.micro // self.world)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, len(mine), per_batch):
            idx = mine[start:start + per_batch]
            if self.first_stage is not None:
                x0 = self.val_images[idx, 0].to(self.device)
                noise = noise_all[idx].to(self.device)
            else:
                x0 = uint8_to_model(self.val_images[idx]).to(self.device)
                noise = noise_all[idx].permute(0, 3, 1, 2).to(self.device)
            t = t_all[idx].to(self.device)
            labels = None if self.val_labels is None else self.val_labels[idx.to(self.device)]
            with self.accelerator.autocast():
                total += self.objective.loss(net, x0, noise, t, labels=labels).double().sum()
        return float(self.accelerator.reduce(total, "sum")) / n

    def _evaluate(self) -> dict[str, Any]:
        """FID/KID/precision/recall of the EMA network (main process; the others wait)."""
        acc, tc = self.accelerator, self.cfg.train
        out: dict[str, Any] = {}
        improved = [False]
        if acc.is_main_process:
            from facediff.api import FaceModel
            from facediff.eval.evaluate import evaluate_model

            if self._eval_state is None:
                self._eval_state = self._eval_reference()
            extractor, ref = self._eval_state
            model = FaceModel(self.cfg, self._ema_net())
            settings = model.settings(seed=EVAL_SEED, batch_size=max(self.micro, 16))
            started = time.perf_counter()
            result = evaluate_model(model, ref, extractor, tc.eval_n, settings=settings,
                                    progress=False)
            sc = result.scores
            out = {"fid": sc.fid, "kid": sc.kid, "precision": sc.precision,
                   "recall": sc.recall, "eval_n": sc.n}
            tqdm.write(f"step {self.step}: {sc.line()} ({settings.sampler} {settings.steps} "
                       f"steps, {time.perf_counter() - started:.0f} s)")
            improved[0] = math.isfinite(sc.fid) and (self.best_fid is None
                                                     or sc.fid < self.best_fid)
            if improved[0]:
                self.best_fid = sc.fid
        if self.world > 1:  # every rank learns whether there is a new best to export
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(improved)
        if improved[0] and self._healthy() and self._finite():
            self._on_main(lambda: ckpt.export_model(self.run_dir / "best-fid", self.cfg,
                                                    self.export_state(),
                                                    step=self.step))
        acc.wait_for_everyone()
        return out

    def _eval_reference(self) -> tuple[Any, Any]:
        """The feature network and the training data's reference features (cached)."""
        from facediff.eval.features import InceptionFeatures, extract_features
        from facediff.eval.reference import Reference, reference_features

        extractor = InceptionFeatures(device=self.device)
        n = self.cfg.train.eval_ref_n
        if self.cfg.data.path:
            ref = reference_features(self.cfg.data, extractor, n=n, progress=self.progress)
        else:  # images handed over in memory: their features, not cached
            idx = np.random.default_rng(0).permutation(len(self.data))[:n]
            feats = extract_features(np.asarray(self.data.images)[np.sort(idx)], extractor,
                                     progress=self.progress)
            labels = self.data.labels[np.sort(idx)] if self.data.labels is not None else None
            ref = Reference(feats, labels, self.data.spec, len(self.data), "training images")
        log.info("evaluating every %d steps: %d samples against %d reference images (%s)",
                 self.cfg.train.eval_every, self.cfg.train.eval_n, len(ref), ref.description)
        return extractor, ref

    # ---- the loop -------------------------------------------------------------------------
    def _handle_signal(self, signum: int, _frame: Any) -> None:
        first = self._stop_signal is None
        self._stop_signal = signum
        if first and self.accelerator.is_main_process:
            # repeats (a launcher forwarding the same signal) are ignored until the
            # checkpoint is written; SIGKILL still stops at once, and a checkpoint being
            # written is never left half-done (it is renamed into place when complete)
            tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint, then exit")

    def _should_stop(self, deadline: float | None) -> bool:
        """A signal arrived, or the wall-clock deadline passed (on any process)."""
        stop = self._stop_signal is not None or (deadline is not None
                                                 and time.monotonic() >= deadline)
        if self.world == 1:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        return bool(self.accelerator.reduce(flag, "sum").item() > 0)

    def draw_batch(self, step: int) -> GlobalBatch:
        """The seeded draws of global batch ``step``: the same on every process and resume."""
        tc = self.cfg.train
        g = torch.Generator().manual_seed(step_seed(tc.seed, step))
        idx = torch.from_numpy(self.stream.batch(step))
        noise = torch.randn((tc.batch_size, *self.sample_shape), generator=g)
        timesteps = self.objective.sample_timesteps(tc.batch_size, g)
        flip = torch.rand(tc.batch_size, generator=g) < 0.5
        labels = None
        if self.train_labels is not None:  # condition dropout, for guidance and subsets
            k = self.train_labels.shape[1]
            drop = (torch.rand(tc.batch_size, 1, generator=g) < tc.cond_drop) | \
                (torch.rand(tc.batch_size, k, generator=g) < tc.attr_drop)
            labels = torch.where(drop.to(self.device), UNSPECIFIED,
                                 self.train_labels[idx.to(self.device)])
        return GlobalBatch(idx, noise, timesteps, flip, labels)

    def images(self, batch: GlobalBatch, sel: slice) -> torch.Tensor:
        """The model-range images of ``batch[sel]`` on the device, flipped where drawn (a
        latent run: the latents of the images or of their mirror images)."""
        idx = batch.idx[sel].to(self.device)
        if self.first_stage is not None:
            side = batch.flip[sel].to(self.device).long() if self.cfg.data.hflip else \
                torch.zeros_like(idx)
            return self.train_images[idx, side]
        x0 = uint8_to_model(self.train_images[idx])
        if self.cfg.data.hflip:
            x0 = torch.where(batch.flip[sel].to(self.device)[:, None, None, None],
                             x0.flip(3), x0)
        return x0

    def micro_loss(self, batch: GlobalBatch, sel: slice, micro_index: int,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to back-propagate, the loss to log) of this process's part ``sel`` of
        micro-batch ``micro_index``: the diffusion loss, both times (the task's hook: an
        autoencoder run, facediff.train.autoencoder, has its own)."""
        x0 = self.images(batch, sel)
        noise = batch.noise[sel].to(self.device, non_blocking=True)
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        ts = batch.timesteps[sel].to(self.device, non_blocking=True)
        labels = None if batch.labels is None else batch.labels[sel]
        loss = self.objective.loss(self.train_net, x0, noise, ts, labels=labels).mean()
        return loss, loss

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step on global batch ``self.step``; returns (loss sum, grad norm)."""
        tc, acc = self.cfg.train, self.accelerator
        # a warm-started run draws on from where its weights' earlier pieces stopped, not
        # the first piece's batches, noise and timesteps again
        at = self.step + tc.init_images // tc.batch_size
        batch = self.draw_batch(at)
        torch.manual_seed(step_seed(tc.seed, at) + 104_729 * self.rank)  # dropout
        loss_sum = torch.zeros((), device=self.device)
        grad_norm = None
        finite = True
        for m in range(tc.grad_accum):
            sel = rank_slice(m, self.micro, self.rank, self.world)
            with acc.accumulate(self.train_net):
                loss, logged = self.micro_loss(batch, sel, m)
                acc.backward(loss)
                if acc.sync_gradients:  # grad_clip <= 0: no clipping, the norm is still logged
                    limit = tc.grad_clip if tc.grad_clip > 0 else float("inf")
                    grad_norm = acc.clip_grad_norm_(self.train_net.parameters(), limit)
                    # NaN/inf loss or gradients: the norm of the all-reduced gradients says
                    # so, the same on every process
                    finite = bool(torch.isfinite(grad_norm))
                # fp16's GradScaler skips an inf step itself (and lowers its scale)
                if finite or getattr(acc, "scaler", None) is not None:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            loss_sum += logged.detach()
        self.lr_scheduler.step()
        self.step += 1
        self.last_step_finite = finite
        if finite:
            self.ema.step(self.net.parameters())  # the EMA only ever sees good steps
            self.bad_in_row = 0
        else:
            self.skipped_steps += 1
            self.bad_in_row += 1
        return loss_sum / tc.grad_accum, grad_norm

    def fit(self, until_step: int | None = None,
            time_limit_min: float | None = None) -> TrainResult:
        """Train to ``train.max_steps``, checkpoint and export. Pause early at ``until_step``
        or after ``time_limit_min`` minutes of this call (reason "time_limit"; resumable)."""
        deadline = None if time_limit_min is None else time.monotonic() + 60 * time_limit_min
        self.last_loss = self.img_per_s = None
        self.spike_since = None
        self.message = ""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ckpt.WriteError(f"cannot create the run dir {self.run_dir}: "
                                  f"{e.strerror or e}") from e
        lock = self._lock()
        try:
            self._resume_latest()
            self._announce()
            self._open_logs()
            old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
            for sig in old_handlers:
                signal.signal(sig, self._handle_signal)
            try:  # the handlers stay through the last checkpoint and export
                reason = self._train_loop(until_step, deadline, time_limit_min)
                reason = self._finish(reason)
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
        finally:
            if lock is not None:
                lock.release()
        return TrainResult(self.run_dir, self.step, reason, self.last_loss, self.img_per_s,
                           self.best_val, self.accelerator.is_main_process, self.message,
                           self.skipped_steps)

    def _lock(self) -> RunLock | None:
        """Take the run dir's lock (rank 0; every rank learns whether it got it), then clear
        what interrupted writes of an earlier run left behind."""
        acc = self.accelerator
        lock, problem = None, [None]
        if acc.is_main_process:
            lock = RunLock(self.run_dir)
            try:
                lock.acquire()
                for p in ckpt.clean_stale(self.run_dir):
                    log.info("removed %s, left by an interrupted write", p)
            except (RunLockedError, OSError) as e:
                lock.release()
                problem = [str(e) if isinstance(e, RunLockedError) else
                           f"cannot take the lock {lock.path}: {e.strerror or e}"]
                lock = None
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(problem)
        if problem[0] is not None:
            raise RunLockedError(problem[0])
        return lock

    def _resume_latest(self) -> None:
        """Resume from the run's newest checkpoint that loads, if it has one (newer ones that
        do not load are skipped, saying why; rank 0 decides, so every rank resumes from the
        same step)."""
        acc = self.accelerator
        found, problem = None, None
        if acc.is_main_process:
            try:
                found = ckpt.load_latest_checkpoint(self.run_dir, quarantine=True)
            except FacediffError as e:
                problem = str(e)
        latest = [None if found is None else str(found[0]), problem]
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(latest)
        if latest[1] is not None:
            raise ckpt.CorruptError(latest[1])
        if latest[0] is not None:
            self.resume_from(Path(latest[0]), found[1] if found is not None else None)
            self.saved_step = self.step
        elif self.cfg.train.init:
            self.warm_start(self.cfg.train.init)

    def warm_start(self, model: str) -> None:
        """Start this new run from ``model``'s EMA weights (``train.init``): the network and
        its EMA both begin there, and the EMA's ramp-up counts the images those weights had
        seen, so the average continues rather than restarts. The optimizer, the lr schedule
        and the step begin anew. The model must be this run's network, objective, size and
        conditions (else a ConfigError naming what differs)."""
        if self.task != "diffusion":
            raise ConfigError(f"train.init starts a diffusion run from a model; this run "
                              f"trains {_TASK_WHAT[self.task]}")
        saved, weights, source = ckpt.read_model(model)
        check_resumable(saved, self.cfg, init=source)
        # a latent model keeps the run's own autoencoder (the same one: its digest was just
        # checked), not the copy in the model, which an fp16 export has rounded
        trained = {k: v for k, v in weights.items() if not k.startswith("first_stage.")}
        self._start_from(model, saved, source, trained, keep="first_stage.")

    def _start_from(self, model: str, saved: Config, source: str,
                    trained: dict[str, torch.Tensor], *, keep: str | None) -> None:
        """The warm start's common part: ``trained`` (names of ``self.net``) replaces the
        network's weights but those starting with ``keep``, and its EMA's; the images those
        weights had seen are counted on (``train.init_images``)."""
        state = self.net.state_dict()
        kept = {k for k in state if keep is not None and k.startswith(keep)}
        if trained.keys() != state.keys() - kept:
            raise ConfigError(f"the weights of {source} do not fit this run's network")
        state.update({k: v.to(state[k].dtype) for k, v in trained.items()})
        self.net.load_state_dict(state)
        state = self.net.state_dict()
        self.ema.load_named_state(self.net, state)
        self.ema_net.load_state_dict(state)
        tc = self.cfg.train
        step = ckpt.source_step(model, source)
        if step is None and self.accelerator.is_main_process:
            log.warning("%s does not record its training step: its images are not counted "
                        "(train.init_images)", source)
        step = step or 0
        tc.init_images = saved.train.init_images + step * saved.train.batch_size
        tc.init_digest = weights_digest(trained)
        self.ema.optimization_step = tc.init_images // tc.batch_size
        if self.accelerator.is_main_process:
            log.info("starting from %s (%d images seen before)", source, tc.init_images)

    def _announce(self) -> None:
        """Save the run's config and say what is being trained, where and how."""
        acc = self.accelerator
        self._on_main(lambda: ckpt.save_config(self.run_dir / "config.yaml", self.cfg))
        if self.first_stage is not None and not (self.run_dir / AUTOENCODER_DIR).is_dir():
            self._on_main(self._keep_autoencoder)  # the run resumes with it alone
        if not acc.is_main_process:
            return
        self._record_machine()
        log.info(
            "training %s (%s): %d images (%d held out), %.2fM parameters, "
            "%d process(es) on %s, mixed precision %s", self.run_dir,
            f"preset {self.cfg.preset}" if self.cfg.preset else "default config",
            len(self.train_images), 0 if self.val_images is None else len(self.val_images),
            count_parameters(self.net) / 1e6, self.world, self.device.type,
            acc.mixed_precision,
        )

    def _record_machine(self) -> None:
        """One line per session in RUN/logs/machines.jsonl: when, from which step, on what
        device and how many processes (a model card's "trained on"). A failed write only
        warns: the record is not worth a run."""
        import json
        import platform

        dev = self.device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
        line = {"time": time.time(), "step": self.step, "device": dev.type, "name": name,
                "processes": self.world, "precision": self.accelerator.mixed_precision,
                "torch": torch.__version__, "python": platform.python_version()}
        try:
            path = self.run_dir / "logs" / MACHINES
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as e:
            log.warning("could not record the machine in %s: %s", self.run_dir, e)

    def _keep_autoencoder(self) -> None:
        """A copy of a latent run's autoencoder in RUN/autoencoder/ (an autoencoder export)."""
        assert self.first_stage is not None
        trained = self.first_stage.trained_config  # the autoencoder run's own, if known
        ae_cfg = Config.from_dict((trained or self.cfg).to_dict())
        ae_cfg.train.forget_init()
        ae_cfg.task, ae_cfg.conditions = "autoencoder", []
        ae_cfg.autoencoder.shift, ae_cfg.autoencoder.scale = [], []
        ae_cfg.autoencoder.digest = None
        ckpt.export_model(self.run_dir / AUTOENCODER_DIR, ae_cfg, self.first_stage.state_dict())

    def _train_loop(self, until_step: int | None, deadline: float | None,
                    time_limit_min: float | None) -> str:
        """Optimizer steps until the end, a stop or a pause; returns why it stopped."""
        tc = self.cfg.train
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="training", unit="step",
                   disable=not (self.progress and self.accelerator.is_main_process),
                   dynamic_ncols=True)
        self.train_net.train()
        window = _Window(torch.zeros((), device=self.device), self.step)
        due = False  # a checkpoint is due but held back
        try:
            while self.step < tc.max_steps:
                # Take one optimizer step (skipped when its loss or gradients are not finite).
                loss, grad_norm = self.train_step()
                if self.last_step_finite:
                    window.add(loss)
                bar.update(1)
                if self.bad_in_row >= tc.max_nonfinite_steps:
                    return self._diverged(f"{self.bad_in_row} steps in a row had NaN or inf "
                                          "loss or gradients")
                if self.spike_since is not None and self.step - self.spike_since >= \
                        max(tc.max_nonfinite_steps, 2 * tc.log_every):
                    return self._diverged(f"the loss has stayed above {SPIKE:g}x its best "
                                          f"({self.best_loss:.4f}) since step "
                                          f"{self.spike_since}")

                # Log; validate and evaluate the EMA network when due.
                row = self._train_row(window, grad_norm, bar) if self._due(tc.log_every) \
                    else None
                stop_early = False
                if self.val_images is not None and self._due(tc.val_every):
                    row = self._row(row, val_loss=self._validate())
                    stop_early = 0 < tc.early_stop_patience <= self.bad_vals
                if tc.eval_every and self._due(tc.eval_every):
                    row = self._row(row, **self._evaluate())
                if row is not None:
                    self._log(row)

                # Save a checkpoint (held back while steps are being skipped: weights that led
                # to NaN are no good either) and the progress grid.
                due = due or self.step % tc.checkpoint_every == 0
                if due and self._healthy():
                    due = False
                    try:
                        self._checkpoint()
                    except _Diverged as e:
                        return self._diverged(str(e))
                if self.step % tc.sample_every == 0:
                    self._sample_grid()

                # Stop early, on a signal, at the time limit or at a pause.
                reason = self._stop_reason(stop_early, deadline, until_step, time_limit_min)
                if reason is not None:
                    return reason
        finally:
            bar.close()
        return "finished"

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.cfg.train.max_steps

    def _row(self, row: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
        """A metrics row for this step (a new one, or ``row``) with ``values`` added."""
        row = row or {"step": self.step, "images": self.step * self.cfg.train.batch_size,
                      "time": time.time()}
        row.update(values)
        return row

    def _train_row(self, window: _Window, grad_norm: torch.Tensor | None,
                   bar: tqdm) -> dict[str, Any]:
        """Loss (mean over processes and the steps since the last row), speed, lr."""
        self.last_loss = float(self.accelerator.reduce(window.loss, "mean")) / window.steps \
            if window.steps else None  # every step since the last row was skipped
        self.img_per_s = window.images_per_s(self.step, self.cfg.train.batch_size)
        bar.set_postfix(loss="nan" if self.last_loss is None else f"{self.last_loss:.4f}",
                        img_s=f"{self.img_per_s:.1f}",
                        epoch=f"{self.stream.epoch_of(self.step):.1f}",
                        **({"skipped": self.skipped_steps} if self.skipped_steps else {}))
        window.reset(self.step)
        if self.last_loss is not None:
            if self.best_loss is not None and self.last_loss > SPIKE * self.best_loss:
                if self.spike_since is None:
                    self.spike_since = self.step
                    if self.accelerator.is_main_process:
                        tqdm.write(f"step {self.step}: loss {self.last_loss:.4f} is over "
                                   f"{SPIKE:g}x its best ({self.best_loss:.4f}): checkpoints "
                                   "held back until it comes down")
            else:
                self.spike_since = None
                self.best_loss = self.last_loss if self.best_loss is None else \
                    min(self.best_loss, self.last_loss)
        return self._row(None, loss=self.last_loss, lr=self.lr_scheduler.get_last_lr()[0],
                         grad_norm=None if grad_norm is None else float(grad_norm),
                         img_per_s=self.img_per_s, skipped=self.skipped_steps)

    def _validate(self) -> float:
        """The held-out loss; a new best exports the EMA network to RUN/best/."""
        val = self._val_loss()
        if not math.isfinite(val):  # never a "best", never an export
            self.bad_vals += 1
            return val
        if self.best_val is None or val < self.best_val - self.cfg.train.early_stop_min_delta:
            self.best_val, self.bad_vals = val, 0
            if self._healthy() and self._finite():  # the best EMA so far, kept apart
                self._on_main(lambda: ckpt.export_model(self.run_dir / "best", self.cfg,
                                                        self.export_state(),
                                                        step=self.step))
        else:
            self.bad_vals += 1
        return val

    def _stop_reason(self, stop_early: bool, deadline: float | None,
                     until_step: int | None, time_limit_min: float | None) -> str | None:
        main = self.accelerator.is_main_process
        if stop_early:
            if main:
                tqdm.write(f"early stopping at step {self.step}: validation loss did not "
                           f"improve for {self.bad_vals} evaluations (best {self.best_val:.5f})")
            return "early_stopped"
        if self._should_stop(deadline):
            if self._stop_signal is not None:
                return "interrupted"
            if main:
                tqdm.write(f"time limit of {time_limit_min:g} min reached at step "
                           f"{self.step}: checkpoint, export, stop (resume to go on)")
            return "time_limit"
        if until_step is not None and self.step >= until_step:
            return "paused"
        return None

    def _diverged(self, why: str) -> str:
        last = ckpt.latest_checkpoint(self.run_dir)
        export = " and the export" if ckpt.is_exported_model(self.run_dir / ckpt.EXPORT_DIR) \
            else ""
        kept = f"kept {last.name}{export}" if last is not None else \
            "no checkpoint was written before it"
        self.message = (f"training diverged at step {self.step}: {why}; {kept} (nothing "
                        "non-finite is written); resume with a lower train.lr or "
                        "stronger train.grad_clip")
        if self.accelerator.is_main_process:
            tqdm.write(self.message)
        self._log(self._row(None, skipped=self.skipped_steps))
        return "diverged"

    def _finish(self, reason: str) -> str:
        """The last checkpoint, the last progress grid and the export (none of them after a
        divergence: the last good ones stay)."""
        try:
            if reason != "diverged" and not self._healthy():
                if self.accelerator.is_main_process:
                    tqdm.write(f"step {self.step}: not saved (steps are being skipped or the "
                               "loss is blown up); the newest checkpoint and the export stay")
            elif reason != "diverged":
                if self.saved_step != self.step:
                    self._checkpoint()
                if reason not in ("interrupted", "paused") and \
                        self.step % self.cfg.train.sample_every:
                    self._sample_grid()
                self._export()
        except _Diverged as e:
            reason = self._diverged(str(e))
        self.accelerator.wait_for_everyone()
        if self.writer is not None:
            self.writer.close()
        return reason


class _Diverged(Exception):
    """Raised inside the loop when the weights are found non-finite (not a user error: the
    run ends with reason "diverged")."""


class _Window:
    """The summed loss and the time since the last metrics row."""

    def __init__(self, zero: torch.Tensor, step: int) -> None:
        self.loss = zero
        self.reset(step)

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss
        self.steps += 1

    def reset(self, step: int) -> None:
        self.loss.zero_()
        self.steps, self.step0, self.started = 0, step, time.perf_counter()

    def images_per_s(self, step: int, batch_size: int) -> float:
        return (step - self.step0) * batch_size / max(time.perf_counter() - self.started, 1e-9)


def train(cfg: Config, run_dir: str | Path, *, data: ImageSet | None = None,
          progress: bool = True, until_step: int | None = None,
          time_limit_min: float | None = None,
          autoencoder: FirstStage | None = None) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` with ``cfg`` (see ``Trainer.fit``); a latent
    model's ``autoencoder`` (facediff.model.autoencoder.load_autoencoder) on its first call.
    Tunes glibc's allocator as the CLI does (facediff.allocator: 21-39% faster steps on a CPU)."""
    from facediff.allocator import tune_allocator

    tune_allocator()
    return Trainer(cfg, run_dir, data=data, progress=progress,
                   autoencoder=autoencoder).fit(until_step, time_limit_min)
