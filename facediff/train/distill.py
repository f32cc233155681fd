"""The distillation task: a few-step student of a trained model, on the same trainer.

Progressive distillation (Salimans & Ho 2022) of the eta-0 DDIM sampler. The teacher samples
in ``distill.start_steps`` DDIM steps; round ``r`` (0-based) trains a student to take in one
DDIM step what the teacher takes in two, so that it samples in ``start_steps / 2**(r+1)``
steps; the last round ends at ``distill.steps``. Every schedule and timestep comes from
``make_scheduler("ddim", ...)`` (facediff.diffusion.sampling), so the student learns exactly the
grid ("trailing" spacing) that ``facediff sample`` then runs it on.

A step: x0 from the data (a latent model's cached latents, as the diffusion task draws
them), a student step index i, t = the student's timestep i and z_t = alpha_t x0 + sigma_t eps.
The frozen teacher (classifier-free guided at ``distill.guidance`` for conditional models)
takes two DDIM steps z_t -> z_mid -> z_next: to the teacher's timestep 2i+1, then to where the
student's DDIM step from t lands (the student's timestep i+1, or x0 after the last; exactly
where diffusers' ``DDIMScheduler.step`` goes); the target is the x0 from which one DDIM step
from z_t lands on z_next,
    x~ = (z_next - (sigma_next / sigma_t) z_t) / (alpha_next - (sigma_next / sigma_t) alpha_t)
(the teacher's x0 at the last step, where sigma_next = 0), not clipped. The student's loss is
max(SNR_t, 1) |x0_student - x~|^2 (the paper's truncated-SNR weighting).

Rounds follow from the step (``step // distill.steps_per_round``), so resume needs only the
current teacher: round 0's is the given model (checked by its weights digest), a later one's
is kept in the checkpoint's training state. At a round boundary the student's EMA becomes the
teacher, the student restarts from it (so does the EMA), Adam's moments are reset and the
learning-rate schedule (warm-up, then decay) starts again: each round is a new problem.

Everything else is facediff.train.trainer's (accelerate, the lock, exact resume, checkpoints
on SIGTERM and at the time limit, EMA, the non-finite guard, TensorBoard, the progress bar).
The export is an ordinary diffusion model whose config samples with DDIM at
``distill.steps`` (guidance 1: the guidance is inside), so every command uses it as it is.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from facediff.config import (
    Condition,
    Config,
    DistillConfig,
    distill_rounds,
    is_distillation,
    run_task,
)
from facediff.configure import resolve_config
from facediff.data import ImageSet
from facediff.data.transforms import uint8_to_model
from facediff.diffusion.objectives import predicted_x0
from facediff.diffusion.samplers import SamplingSettings
from facediff.diffusion.sampling import Denoiser, generate, make_scheduler
from facediff.errors import ConfigError, FacediffError
from facediff.model.autoencoder import FirstStage, build_first_stage, weights_digest
from facediff.train import checkpoint as ckpt
from facediff.train.trainer import SAMPLE_SEED, GlobalBatch, Trainer, TrainResult, step_seed

log = logging.getLogger(__name__)

STEP_INDEX_SALT = 7_777  # the student step indices' generator: apart from draw_batch's
TEACHER_STATE = "distill_teacher"  # the current teacher's weights in a checkpoint's state


@dataclass(frozen=True)
class Round:
    """One halving: the student's DDIM schedule (``n`` steps) and the teacher's (2n)."""

    index: int
    student: SchedulerMixin
    teacher: SchedulerMixin

    @property
    def n(self) -> int:
        return len(self.student.timesteps)


def make_rounds(cfg: Config) -> list[Round]:
    """The rounds of ``cfg.distill``, each with the DDIM schedules ``facediff sample`` uses
    (x0 not clipped: targets are computed unclipped)."""
    d = cfg.distill
    rounds = []
    for r in range(distill_rounds(d)):
        n = d.start_steps >> (r + 1)
        try:
            student = make_scheduler("ddim", cfg.diffusion, n, clip_sample=False)
            teacher = make_scheduler("ddim", cfg.diffusion, 2 * n, clip_sample=False)
        except FacediffError as e:
            raise ConfigError(f"distill: {e}") from e
        # trailing spacing: every other teacher timestep is the student's
        if not torch.equal(teacher.timesteps[::2], student.timesteps):
            raise ConfigError(f"distill: the {n}-step DDIM timesteps are not every other one of "
                              f"the {2 * n}-step ones ({student.timesteps.tolist()})")
        rounds.append(Round(r, student, teacher))
    return rounds


def alpha_bar(sched: SchedulerMixin, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at timesteps ``t``, shaped (B, 1, 1, 1)."""
    return sched.alphas_cumprod.to(t.device)[t].float().reshape(-1, 1, 1, 1)


def landing_alpha_bar(sched: SchedulerMixin, t: torch.Tensor) -> torch.Tensor:
    """The alpha_bar that diffusers' ``DDIMScheduler.step`` takes a sample at ``t`` to:
    that of t - T // N (1, i.e. x0, past the end, as ``set_alpha_to_one`` says). On the
    trailing grid that is the next timestep whenever N divides T (for T = 1000: N <= 8);
    else one off it, and the student's target follows its sampler there."""
    prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
    ac = sched.alphas_cumprod.to(t.device)
    final = sched.final_alpha_cumprod.to(t.device, ac.dtype)
    out = torch.where(prev >= 0, ac[prev.clamp(min=0)], final)
    return out.float().reshape(-1, 1, 1, 1)


def predicted_eps(pred: torch.Tensor, z: torch.Tensor, abar: torch.Tensor,
                  prediction: str) -> torch.Tensor:
    """The noise a prediction at z implies (as ``DDIMScheduler.step`` derives it)."""
    pred, z = pred.float(), z.float()
    if prediction == "eps":
        return pred
    if prediction == "v":
        return abar.sqrt() * pred + (1 - abar).sqrt() * z
    return (z - abar.sqrt() * pred) / (1 - abar).sqrt()


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, abar_to: torch.Tensor) -> torch.Tensor:
    """eta-0 DDIM: the sample at ``abar_to`` on the line through x0 and eps."""
    return abar_to.sqrt() * x0 + (1 - abar_to).sqrt() * eps


def distill_target(teacher: Denoiser, z: torch.Tensor, i: torch.Tensor, rnd: Round, *,
                   prediction: str) -> torch.Tensor:
    """x~: the x0 whose one DDIM step from z (at the student's timestep ``i``) lands where two
    teacher DDIM steps land (see the module docstring); per row, each its own step."""
    t = rnd.student.timesteps.to(z.device)[i]
    t_mid = rnd.teacher.timesteps.to(z.device)[2 * i + 1]
    a_t, a_mid = alpha_bar(rnd.student, t), alpha_bar(rnd.teacher, t_mid)
    a_next = landing_alpha_bar(rnd.student, t)  # where the student's own DDIM step lands
    pred = teacher(z, t)
    x0 = predicted_x0(pred, z, a_t, prediction)
    z_mid = ddim_step(x0, predicted_eps(pred, z, a_t, prediction), a_mid)
    pred = teacher(z_mid, t_mid)
    x0 = predicted_x0(pred, z_mid, a_mid, prediction)
    z_next = ddim_step(x0, predicted_eps(pred, z_mid, a_mid, prediction), a_next)
    ratio = ((1 - a_next) / (1 - a_t)).sqrt()  # sigma_next / sigma_t
    return (z_next - ratio * z.float()) / (a_next.sqrt() - ratio * a_t.sqrt())


def guided(net: torch.nn.Module, labels: torch.Tensor | None, guidance: float) -> Denoiser:
    """The teacher with its rows' conditions and classifier-free guidance (uncond + w (cond -
    uncond), both halves in one forward, as facediff.diffusion.sampling.guided_denoiser does,
    but with a timestep per row)."""
    if labels is None or guidance == 1.0:
        return lambda z, t: (net(z, t) if labels is None else net(z, t, labels)).sample.float()
    uncond = net.unconditional_labels(labels.shape[0], labels.device)
    if guidance == 0.0:
        return lambda z, t: net(z, t, uncond).sample.float()

    def both(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = net(torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, uncond]))
        c, u = out.sample.float().chunk(2)
        return u + guidance * (c - u)

    return both


class DistillTrainer(Trainer):
    """``DistillTrainer(cfg, run_dir, teacher=weights).fit()`` for a config made by
    ``distill_config`` (round 0's teacher: ``weights``, the model the config was made from)."""

    task = "distill"

    def __init__(self, cfg: Config, run_dir: str | Path, data: ImageSet | None = None,
                 progress: bool = True, *, teacher: Mapping[str, torch.Tensor]) -> None:
        if cfg.train.early_stop_patience:
            raise ConfigError("train.early_stop_patience: a distillation does not stop early "
                              "(each round's loss is against another teacher)")
        self.rounds = make_rounds(cfg)
        d = cfg.distill
        digest = weights_digest(teacher)
        if digest != d.teacher_digest:
            raise ConfigError(f"the teacher's weights (digest {digest[:12]}) are not the ones "
                              f"this config distils ({str(d.teacher_digest)[:12]}): make the "
                              "config with distill_config from them")
        self.guidance = 1.0 if d.guidance is None else d.guidance
        self._teacher_weights: Mapping[str, torch.Tensor] | None = teacher
        self._teacher_conditions = [Condition(c.name, c.kind, list(c.values))
                                    for c in cfg.conditions]
        self.teacher_round = 0  # the round the teacher's weights are the teacher of
        super().__init__(cfg, run_dir, data=data, progress=progress,
                         autoencoder=_first_stage_of(cfg, teacher))

    # ---- setup ----------------------------------------------------------------------------
    def _load_data(self, data: ImageSet | None) -> None:
        """The diffusion task's data; its conditions must be the ones the teacher knows."""
        super()._load_data(data)
        if self.cfg.conditions != self._teacher_conditions:
            names = [c.name for c in self.cfg.conditions] or "none"
            want = [c.name for c in self._teacher_conditions] or "none"
            raise ConfigError(f"the data's conditions ({names}) are not the teacher's "
                              f"({want}): distil on data labelled as the teacher's was")

    def _build_network(self) -> None:
        """The student starts as the teacher; the teacher is a frozen copy."""
        super()._build_network()
        assert self._teacher_weights is not None
        _load_weights(self.net, self._teacher_weights, self.cfg.distill.teacher)
        self._teacher_weights = None  # the student holds them now
        self.teacher = copy.deepcopy(self.net).to(self.device).eval().requires_grad_(False)

    def _build_optimizer(self) -> None:
        """AdamW as for diffusion, with the learning-rate schedule (warm-up, then decay)
        restarting every round."""
        super()._build_optimizer()
        tc, k = self.cfg.train, self.cfg.distill.steps_per_round
        opt = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's wraps it
        one_round = get_scheduler(
            {"constant": "constant_with_warmup"}.get(tc.lr_schedule, tc.lr_schedule), opt,
            num_warmup_steps=tc.warmup_steps, num_training_steps=k)
        self.lr_scheduler = LambdaLR(opt, [_per_round(f, k) for f in one_round.lr_lambdas])

    def _announce(self) -> None:
        super()._announce()
        if self.accelerator.is_main_process:
            d = self.cfg.distill
            r = len(self.rounds)
            log.info("distilling %s: DDIM %d -> %d steps in %d round%s of %d optimizer steps%s",
                     d.teacher, d.start_steps, d.steps, r, "s" * (r != 1), d.steps_per_round,
                     f", guidance {self.guidance:g} distilled in" if self.cfg.conditions else "")

    # ---- rounds and state -----------------------------------------------------------------
    def _round_at(self, step: int) -> Round:
        """The round optimizer step ``step`` (0-based) belongs to."""
        return self.rounds[min(step // self.cfg.distill.steps_per_round, len(self.rounds) - 1)]

    def _weights_round(self) -> Round:
        """The round the weights after ``self.step`` steps were trained in."""
        return self._round_at(max(self.step - 1, 0))

    def _enter_round(self, r: int) -> None:
        """A new round: the student's EMA becomes the teacher, and the student (and so its
        EMA) restarts from it with fresh Adam moments."""
        if r <= self.teacher_round:
            return
        with torch.no_grad():
            self.ema.copy_to(self.teacher.parameters())
            self.ema.copy_to(self.net.parameters())
        self.optimizer.state.clear()
        self.teacher_round = r
        # a new round's loss is against a new teacher: the blow-up guard starts afresh
        self.best_loss = self.spike_since = None
        if self.accelerator.is_main_process and self.progress:
            n = self.rounds[r].n
            tqdm.write(f"step {self.step}: round {r + 1} of {len(self.rounds)}: the "
                       f"{2 * n}-step student is the teacher of a {n}-step one")

    def _train_state(self) -> dict[str, Any]:
        """The trainer's state, the teacher's round and (after round 0) its weights."""
        state = super()._train_state()
        state["distill_round"] = self.teacher_round
        if self.teacher_round:
            state[TEACHER_STATE] = {k: v.detach().cpu().contiguous()
                                    for k, v in self.teacher.state_dict().items()}
        return state

    def resume_from(self, path: Path, loaded: dict[str, Any] | None = None) -> None:
        """The trainer's resume, then the teacher of the checkpoint's round."""
        c = loaded if loaded is not None else ckpt.load_checkpoint(path)
        super().resume_from(path, c)
        s = c["state"]
        r = int(s.get("distill_round", 0))
        if r:
            weights = s.get(TEACHER_STATE)
            if not isinstance(weights, dict) or ckpt.non_finite(weights):
                raise ckpt.CorruptError(f"{path / 'state.pt'} lacks a usable round-{r + 1} "
                                        "teacher (move the checkpoint aside to resume from "
                                        "an older one)")
            self.teacher.load_state_dict(weights)
        self.teacher_round = r

    # ---- a step ---------------------------------------------------------------------------
    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._enter_round(self._round_at(self.step).index)
        return super().train_step()

    def draw_batch(self, step: int) -> GlobalBatch:
        """The diffusion task's draws (images, flips, noise, condition dropout), with the
        student's step indices (0..n-1 of the step's round) in place of timesteps."""
        batch = super().draw_batch(step)
        tc = self.cfg.train
        g = torch.Generator().manual_seed(step_seed(tc.seed, step) + STEP_INDEX_SALT)
        batch.timesteps = torch.randint(0, self._round_at(step).n, (tc.batch_size,),
                                        generator=g)
        return batch

    def micro_loss(self, batch: GlobalBatch, sel: slice, micro_index: int,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The distillation loss of this process's part of the micro-batch, both times."""
        x0 = self.images(batch, sel)
        noise = batch.noise[sel].to(self.device, non_blocking=True)
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        i = batch.timesteps[sel].to(self.device)
        labels = None if batch.labels is None else batch.labels[sel]
        loss = self.distill_loss(self.train_net, x0, noise, i, labels=labels,
                                 rnd=self._round_at(self.step)).mean()
        return loss, loss

    def distill_loss(self, net: torch.nn.Module, x0: torch.Tensor, noise: torch.Tensor,
                     i: torch.Tensor, *, labels: torch.Tensor | None, rnd: Round,
                     ) -> torch.Tensor:
        """max(SNR_t, 1) |x0 of ``net`` - x~|^2 per sample, at the student's step ``i``."""
        t = rnd.student.timesteps.to(x0.device)[i]
        abar = alpha_bar(rnd.student, t)
        z = abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()
        with torch.no_grad(), self.accelerator.autocast():
            target = distill_target(guided(self.teacher, labels, self.guidance), z, i, rnd,
                                    prediction=self.cfg.diffusion.prediction)
        pred = (net(z, t) if labels is None else net(z, t, labels)).sample
        x0_student = predicted_x0(pred, z, abar, self.cfg.diffusion.prediction)
        weight = (abar / (1 - abar)).clamp(min=1.0).reshape(-1)
        return (x0_student - target).pow(2).mean(dim=(1, 2, 3)) * weight

    # ---- previews and the held-out loss ---------------------------------------------------
    def preview(self) -> tuple[torch.Tensor, int | None]:
        """The student's EMA samples from fixed noise, with DDIM at its round's steps."""
        n = self.cfg.train.sample_n
        settings = SamplingSettings(sampler="ddim", steps=self._weights_round().n, eta=0.0,
                                    guidance=1.0, seed=SAMPLE_SEED, batch_size=n)
        return generate(self._ema_net(), self.cfg.diffusion, n,
                        settings.resolve(self.cfg.sample)), None

    def _validate(self) -> float:
        """The held-out loss, logged only: losses of different rounds compare different
        teachers, so there is no best-so-far export and no early stopping."""
        return self._val_loss()

    @torch.no_grad()
    def _val_loss(self) -> float:
        """The distillation loss of the EMA student on the held-out images against the
        current teacher, with fixed noise and step indices."""
        assert self.val_images is not None
        net, rnd = self._ema_net(), self._weights_round()
        n = len(self.val_images)
        g = torch.Generator().manual_seed(step_seed(self.cfg.train.seed, -1))
        noise_all = torch.randn((n, *self.sample_shape), generator=g)
        i_all = torch.randint(0, rnd.n, (n,), generator=g)
        mine = torch.arange(self.rank, n, self.world)  # each process its share, summed
        per_batch = max(1, self.micro // self.world)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, len(mine), per_batch):
            idx = mine[start:start + per_batch]
            x0 = self.val_images[idx, 0] if self.first_stage is not None else \
                uint8_to_model(self.val_images[idx])
            labels = None if self.val_labels is None else self.val_labels[idx.to(self.device)]
            with self.accelerator.autocast():
                loss = self.distill_loss(net, x0.to(self.device),
                                         noise_all[idx].to(self.device),
                                         i_all[idx].to(self.device), labels=labels, rnd=rnd)
            total += loss.double().sum()
        return float(self.accelerator.reduce(total, "sum")) / n


def _per_round(lam: Callable[[int], float], k: int) -> Callable[[int], float]:
    return lambda step: lam(step % k)


def _load_weights(net: torch.nn.Module, weights: Mapping[str, torch.Tensor],
                  source: str | None) -> None:
    try:
        net.load_state_dict({k: v.float() for k, v in weights.items()})
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise ckpt.CorruptError(f"the teacher's weights ({source}) do not fit the network "
                                f"its config describes ({detail})") from None


def _first_stage_of(cfg: Config, weights: Mapping[str, torch.Tensor]) -> FirstStage | None:
    """A latent teacher's frozen autoencoder (from its own weights), for the latent cache;
    None for a pixel model. It is kept in RUN/autoencoder/ as an autoencoder of its own."""
    if cfg.autoencoder.kind == "none":
        return None
    first = build_first_stage(cfg)
    prefix = "first_stage."
    first.load_state_dict({k[len(prefix):]: v.float() for k, v in weights.items()
                           if k.startswith(prefix)})
    own = Config.from_dict(cfg.to_dict())
    own.distill = DistillConfig()  # the autoencoder's copy is nobody's distillation
    first.trained_config = own
    return first


def load_teacher(path: str | Path | None) -> tuple[Config, dict[str, torch.Tensor], str]:
    """The model to distil (a run dir, an exported model or a bundled name): its config,
    its EMA weights and their digest. An autoencoder is a one-line error."""
    cfg, weights, source = ckpt.read_model(path)
    if cfg.task != "diffusion":
        raise FacediffError(f"{source} is an autoencoder, not a diffusion model: distil a "
                            "model trained with facediff train")
    return cfg, weights, weights_digest(weights)


def distill_config(teacher: Config, *, digest: str, steps: int,
                   start_steps: int | None = None, steps_per_round: int | None = None,
                   teacher_name: str | None = None, data_path: str | None = None,
                   overrides: Sequence[str] = (), saved: Config | None = None) -> Config:
    """The config of a distillation of ``teacher`` (digest: ``load_teacher``'s), or of the
    run that ``saved`` is the config of (resuming): the teacher's network, diffusion and data
    with ``distill`` filled in, sampling set to DDIM at ``steps`` with guidance 1 (the
    teacher's guidance is distilled in), the ``--set`` ``overrides``, and train.max_steps =
    rounds x steps_per_round; checked in full."""
    if saved is not None and run_task(saved) != "distill":
        command = {"autoencoder": "facediff autoencoder train"}.get(run_task(saved),
                                                                      "facediff train")
        raise FacediffError(f"that run dir is not a distillation but a {command} run "
                            "(resume it with that command, or choose a new --out)")
    if saved is not None and saved.distill.teacher_digest != digest:
        raise ConfigError(f"cannot resume with a different teacher: this run distils "
                          f"{saved.distill.teacher} (weights digest "
                          f"{str(saved.distill.teacher_digest)[:12]}), not one with digest "
                          f"{digest[:12]} (start a new --out to distil another)")
    cfg = Config.from_dict((saved or teacher).to_dict())
    if saved is None:  # a new run: what the teacher's config says that a distillation changes
        cfg.distill = DistillConfig(guidance=teacher.sample.guidance if teacher.conditions
                                    else None)
        if cfg.conditions and cfg.data.conditions is None:
            cfg.data.conditions = [c.name for c in cfg.conditions]  # the teacher's, pinned
        cfg.sample.sampler, cfg.sample.eta, cfg.sample.guidance = "ddim", 0.0, 1.0
        cfg.train.early_stop_patience = 0  # a distillation does not stop early
        # the student starts from its teacher, not from what the teacher was warm-started on
        cfg.train.forget_init()
    d = cfg.distill
    d.teacher, d.teacher_digest, d.steps = teacher_name, digest, steps
    d.start_steps = start_steps or d.start_steps
    d.steps_per_round = steps_per_round or d.steps_per_round
    if data_path:
        cfg.data.path = data_path
    for assignment in overrides:
        cfg.override(assignment)
    cfg.sample.steps = d.steps
    if d.start_steps > d.steps >= 1:  # else the check below says what is wrong
        total = distill_rounds(d) * d.steps_per_round
        if cfg.train.max_steps != total and any(o.strip().startswith("train.max_steps")
                                                for o in overrides):
            log.warning("train.max_steps of a distillation is rounds x steps_per_round = %d "
                        "(set distill.steps_per_round to change it)", total)
        cfg.train.max_steps = total
        if cfg.train.warmup_steps >= d.steps_per_round:
            log.warning("train.warmup_steps %d is not below distill.steps_per_round %d: the "
                        "learning rate never reaches train.lr in a round",
                        cfg.train.warmup_steps, d.steps_per_round)
    cfg = resolve_config(base=cfg)
    assert is_distillation(cfg)
    return cfg


def distill(cfg: Config, run_dir: str | Path, *, teacher: Mapping[str, torch.Tensor],
            data: ImageSet | None = None, progress: bool = True, until_step: int | None = None,
            time_limit_min: float | None = None) -> TrainResult:
    """Distil (or resume distilling) into ``run_dir`` (see ``Trainer.fit``); ``teacher``:
    the weights ``load_teacher`` read, whose digest ``cfg`` records."""
    return DistillTrainer(cfg, run_dir, data=data, progress=progress, teacher=teacher).fit(
        until_step, time_limit_min)
