"""Typed configuration: data, model, diffusion, training and sampling sections.

A config is plain data: this module imports nothing from facediff but its errors. It is saved
as YAML with every run, checkpoint and exported model (facediff.train.checkpoint writes it),
and it round-trips exactly: ``Config.from_dict(cfg.to_dict()) == cfg``. Presets are YAML files
in ``facediff/presets``; ``--set section.key=value`` overrides one field, and a key that does
not exist is an error that lists the valid ones. ``build_config`` applies the checks a field
type cannot express; facediff.configure adds those that need the sampling code.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from facediff.errors import ConfigError, DataError

Prediction = Literal["eps", "v", "x0"]
BetaSchedule = Literal["linear", "cosine", "scaled_linear", "sigmoid"]
LossWeighting = Literal["none", "min_snr"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
# inference: what a loaded model's network computes in (facediff.device.resolve_precision)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LRSchedule = Literal["cosine", "constant", "linear"]


@dataclass
class DataConfig:
    path: str | None = None
    # auto: detected from the path (CelebA layout, MNIST IDX files, UTKFace names, a Hugging
    # Face dataset, else an image folder)
    source: Literal["auto", "folder", "celeba", "hf", "utkface", "mnist"] = "auto"
    labels: str | None = None  # folder source: a CSV/TSV/JSON labels file
    conditions: list[str] | None = None  # label columns to use as conditions; None = all
    split: str | None = None  # CelebA: train/val/test (default all); HF: a split name
    image_column: str | None = None  # HF: the image column (default: detected)
    celeba_crop: int = 140  # CelebA: the usual square face crop (px of the 178x218 image)
    # where a face photo is aligned to before the model sees it (facediff.faces.templates):
    # auto = celeba for CelebA data, else ffhq; celebahq: celebahq-128's close crops; a
    # trained model records the one it used
    face_template: Literal["auto", "celeba", "celebahq", "ffhq"] = "auto"
    utk_age_bins: list[int] = field(default_factory=lambda: [0, 3, 10, 20, 30, 40, 50, 60, 70])
    image_size: int = 64
    channels: int = 3
    center_crop: bool = True
    hflip: bool = True
    # fraction of images held out for the validation loss (early stopping); 0 = none
    val_fraction: float = 0.0
    cache: bool = True  # keep decoded images in a memory-mapped cache file
    cache_dir: str | None = None  # default: $FACEDIFF_CACHE or ~/.cache/facediff


@dataclass
class ModelConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    layers_per_block: int = 2
    # indices of the resolution levels (0 = full resolution) whose blocks have self-attention
    attention_levels: list[int] = field(default_factory=lambda: [2, 3])
    attention_head_dim: int = 32
    mid_attention: bool = True
    dropout: float = 0.0
    norm_num_groups: int = 32
    resnet_time_scale_shift: Literal["default", "scale_shift"] = "scale_shift"
    # other UNet2DModel arguments, as a diffusers pipeline imported into facediff has them
    # (freq_shift, flip_sin_to_cos, norm_eps, ...); empty for facediff's own models
    unet_extra: Any = field(default_factory=dict)


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_schedule: BetaSchedule = "cosine"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    rescale_zero_snr: bool = False
    prediction: Prediction = "v"
    loss_weighting: LossWeighting = "min_snr"
    snr_gamma: float = 5.0


@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch per optimizer step, split over processes
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 500
    lr_schedule: LRSchedule = "cosine"
    max_steps: int = 50_000
    grad_clip: float = 1.0
    # a step whose loss or gradients are NaN/inf is skipped (weights and EMA unchanged) and
    # counted; this many in a row stop the run as diverged, keeping the last good checkpoint
    max_nonfinite_steps: int = 20
    # auto: bf16 on GPUs that have it (else fp16), bf16 on CPUs with AVX512-BF16 or AMX
    # (measured 61 -> 84 img/s on a 2-core AMD EPYC), else fp32 ("no")
    mixed_precision: MixedPrecision = "auto"
    # the U-Net and its inputs in NHWC layout; null (auto): on for CUDA (what tensor cores
    # prefer), off elsewhere: on this project's 2-core CPU it cost 7-10% img/s (bf16 and fp32)
    channels_last: bool | None = None
    # torch.compile the training forward pass: pays off on GPUs; on a 2-core CPU it took 87 s
    # to compile and was not faster (bench/peers.py, docs/performance.md)
    compile: bool = False
    # the attention layers' kernel in training: auto = plain matmul-softmax on CPUs (6-22%
    # faster steps than SDPA's CPU flash kernel here, docs/performance.md), SDPA on GPUs
    attention: Literal["auto", "sdpa", "math"] = "auto"
    # EMA length in images seen (EDM): decay per step = 0.5 ** (batch / half-life); during
    # ramp-up the half-life is at most ema_rampup * images seen, so short runs are not noise.
    ema_halflife_images: int = 50_000
    ema_rampup: float = 0.05
    seed: int = 0
    log_every: int = 50
    sample_every: int = 1000
    sample_n: int = 16
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    val_every: int = 500
    # warm start: a new run starts from this model's weights (an export, a run dir or a
    # bundled name; `facediff train --init`) instead of random ones; a resumed run ignores
    # it. init_digest and init_images record what it started from: the digest of the weights
    # it trains (a latent model's frozen autoencoder left out) and the images those weights
    # had seen over all earlier pieces. The data stream goes on from there (so a piece does
    # not replay the first piece's batches), and bench/piece.py counts with it.
    init: str | None = None
    init_digest: str | None = None
    init_images: int = 0
    early_stop_patience: int = 0  # validations without improvement before stopping; 0 = off
    early_stop_min_delta: float = 0.0  # a smaller decrease of the validation loss is no gain
    # conditional models: drop the whole condition (-> unconditional, for guidance) with
    # probability cond_drop, and each single attribute (-> unspecified) with attr_drop
    cond_drop: float = 0.1
    attr_drop: float = 0.1
    # FID/KID/precision/recall of eval_n EMA samples (the sample config's sampler and steps)
    # against eval_ref_n training images every eval_every steps; 0 = off. The best FID is
    # exported to RUN/best-fid/. Costs eval_n sampling runs and feature passes each time.
    eval_every: int = 0
    eval_n: int = 500
    eval_ref_n: int = 5000

    def forget_init(self) -> None:
        """Clear the record of a warm start (a config copied into a new model: a distilled
        student, an autoencoder's copy, a run that warm-starts anew)."""
        self.init, self.init_digest, self.init_images = None, None, 0


@dataclass
class SampleConfig:
    sampler: str = "dpmpp"
    steps: int = 25
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 ancestral
    guidance: float = 3.0  # classifier-free guidance scale when attributes are requested
    guidance_rescale: float = 0.0  # 0..1, Lin et al. 2023: rescale the guided prediction


@dataclass
class AutoencoderConfig:
    """The first stage of latent diffusion (docs/latent.md). In an autoencoder run (``task:
    autoencoder``) it is the network being trained; in a latent diffusion model the frozen
    autoencoder whose latents the U-Net learns (``kind: none``: a pixel-space model)."""

    # tiny / kl: facediff trains them; vq: diffusers' VQModel, read with a diffusers
    # LDMPipeline (e.g. CompVis/ldm-celebahq-256), which facediff samples but does not train
    kind: Literal["none", "tiny", "kl", "vq"] = "none"
    # one value per level; the spatial factor is 2 ** (levels - 1). AutoencoderTiny uses one
    # width everywhere (the first value)
    block_out_channels: list[int] = field(default_factory=lambda: [48, 48, 48])
    blocks_per_level: int = 2
    latent_channels: int = 4
    # latent model: the U-Net sees (z - shift) * scale per channel, measured on the dataset's
    # latents when training starts (mean and 1/std; held-out images included)
    shift: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    # latent model: the sha256 of the autoencoder's weights (the latent cache's key)
    digest: str | None = None
    # kind vq: the VQModel's own config (diffusers' vqvae/config.json), from which it is built
    vq_config: Any = field(default_factory=dict)
    # autoencoder run: reconstruction L1 + ssim_weight (1 - SSIM) + kl_weight KL, and after
    # disc_start steps adv_weight x the hinge loss of a patch discriminator (trained from
    # step 0 on the reconstructions, so it is ready when its loss is switched on)
    ssim_weight: float = 0.2
    kl_weight: float = 1e-6
    adv_weight: float = 0.05
    disc_start: int = 2000
    disc_width: int = 32
    disc_layers: int = 3
    # autoencoder run: train on random square crops of this size (0: whole images); the
    # networks are convolutional, so a 128 px autoencoder trains on 64 px crops at the cost
    # of a 64 px one, and is scored on whole images
    train_crop: int = 0


@dataclass
class DistillConfig:
    """Progressive distillation (Salimans & Ho 2022; facediff.train.distill): the teacher's
    eta-0 DDIM sampler at ``start_steps`` is halved round by round into a student that samples
    in ``steps``. ``facediff distill`` fills it in; a model trained from scratch leaves
    ``teacher_digest`` empty (that is how a distillation run is told apart)."""

    teacher: str | None = None  # the teacher's path or bundled name, for the record
    teacher_digest: str | None = None  # sha256 of its weights: resuming needs the same ones
    start_steps: int = 16  # the teacher's DDIM steps in the first round (a power of two)
    steps: int = 4  # the student's DDIM steps at the end (a power of two below start_steps)
    # optimizer steps per round (per halving); train.max_steps = rounds x steps_per_round
    steps_per_round: int = 2000
    # the classifier-free guidance scale distilled into a conditional student (the student
    # then samples at guidance 1); None: the teacher's sample.guidance
    guidance: float | None = None


BINARY_VALUES = ["0", "1"]


@dataclass
class Condition:
    """One condition a dataset's labels carry and a model is trained with:
      * binary: an attribute that is off or on (CelebA's ``Smiling``), values ``["0", "1"]``;
      * categorical: a group with named values (``race``: White, Black, ...; ``digit``: 0..9).
    A model's config lists its conditions (facediff.data.conditions.ConditionSpec orders them).
    """

    name: str = ""
    kind: Literal["binary", "categorical"] = "binary"
    values: list[str] = field(default_factory=lambda: list(BINARY_VALUES))

    def index_of(self, value: str) -> int:
        """The index of a value given by name (or, for binary, 0/1/true/false/yes/no/-1/+1)."""
        v = str(value).strip()
        if self.kind == "binary":
            key = v.lower()
            if key in ("1", "+1", "true", "yes", "on", "y", "t"):
                return 1
            if key in ("0", "-1", "false", "no", "off", "n", "f"):
                return 0
        elif v in self.values:
            return self.values.index(v)
        else:
            lowered = [x.lower() for x in self.values]
            if v.lower() in lowered:
                return lowered.index(v.lower())
        raise DataError(
            f"invalid value {value!r} for {self.name}; valid: {', '.join(self.values)}"
        )


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # what a run trains: a diffusion model (in pixels, or on an autoencoder's latents) or the
    # autoencoder itself
    task: Literal["diffusion", "autoencoder"] = "diffusion"
    # the dataset's condition spec, filled in from the data when training starts
    conditions: list[Condition] = field(default_factory=list)
    preset: str | None = None

    # ---- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return _build(cls, data, "")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Config:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError("config file must be a mapping of sections")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            return cls.from_yaml(p.read_text())
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not text") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {p}: {str(e).splitlines()[0]}") from e

    # ---- overrides --------------------------------------------------------------------
    def override(self, assignment: str) -> None:
        """Apply one ``section.key=value`` assignment; the value is parsed as YAML."""
        if "=" not in assignment:
            raise ConfigError(f"override {assignment!r} must look like section.key=value")
        key, raw = assignment.split("=", 1)
        parts = key.strip().split(".")
        target: Any = self
        for i, name in enumerate(parts):
            valid = [f.name for f in dataclasses.fields(target)]
            if name not in valid:
                where = ".".join(parts[:i]) or "top level"
                raise ConfigError(
                    f"unknown config key {key!r} ({name!r} is not in {where}; "
                    f"valid: {', '.join(valid)})"
                )
            if i < len(parts) - 1:
                target = getattr(target, name)
                if not dataclasses.is_dataclass(target):
                    raise ConfigError(f"unknown config key {key!r}: {name} is not a section")
        name = parts[-1]
        hint = get_type_hints(type(target))[name]
        if dataclasses.is_dataclass(hint):
            raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<key>=...")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse value of {key}: {raw!r}") from e
        setattr(target, name, _coerce(value, hint, key))


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]} in {where}; valid: {', '.join(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting int->float and tuple->list."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"invalid value for {key}: {value!r}")
    if origin is Literal:
        choices = get_args(hint)
        if isinstance(value, bool) and not value and "no" in choices:
            value = "no"  # YAML 1.1 reads a bare `no` as false
        if value not in choices:
            raise ConfigError(
                f"invalid value for {key}: {value!r} (choose from {', '.join(map(str, choices))})"
            )
        return value
    if origin in (list, tuple):
        (item,) = get_args(hint)[:1] or (Any,)
        if isinstance(value, str) and item is str:  # --set data.conditions=Smiling,Male
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid value for {key}: {value!r} (expected a list)")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # no config value means anything at NaN or inf
                raise ConfigError(f"invalid value for {key}: {value!r} (expected a finite "
                                  "number)")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"invalid value for {key}: {value!r} (expected {_type_name(hint)})")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# ---- presets ---------------------------------------------------------------------------

PRESETS = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_preset(name: str) -> Config:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(names)}")
    text = (PRESETS / f"{name}.yaml").read_text()
    cfg = Config.from_yaml(text)
    cfg.preset = name
    return cfg


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    base: Config | None = None,
) -> Config:
    """Build a config: base (or preset, or config file, or defaults), then overrides, then
    ``validate``. Commands use facediff.configure.resolve_config, which also checks the
    sampler against the schedule."""
    if base is not None:
        cfg = Config.from_dict(base.to_dict())
        cfg.preset = base.preset
    elif config_file is not None:
        cfg = Config.load(config_file)
    elif preset is not None:
        cfg = load_preset(preset)
    else:
        cfg = Config()
    for assignment in overrides:
        cfg.override(assignment)
    validate(cfg)
    return cfg


def latent_factor(cfg: Config) -> int:
    """The autoencoder's spatial factor (1: a pixel-space model)."""
    ae = cfg.autoencoder
    return 1 if ae.kind == "none" else 2 ** (len(ae.block_out_channels) - 1)


def sample_shape(cfg: Config) -> tuple[int, int, int]:
    """(channels, height, width) of what the diffusion model denoises: the image, or the
    autoencoder's latent of it."""
    if cfg.autoencoder.kind == "none":
        return cfg.data.channels, cfg.data.image_size, cfg.data.image_size
    side = cfg.data.image_size // latent_factor(cfg)
    return cfg.autoencoder.latent_channels, side, side


def is_distillation(cfg: Config) -> bool:
    """Whether ``cfg`` is a distillation's (a diffusion model learnt from a teacher)."""
    return cfg.task == "diffusion" and cfg.distill.teacher_digest is not None


def run_task(cfg: Config) -> str:
    """What a run of ``cfg`` trains, which decides the command that trains and resumes it:
    "diffusion" (facediff train), "autoencoder" (facediff autoencoder train) or "distill"
    (facediff distill; its model is a diffusion model too)."""
    return "distill" if is_distillation(cfg) else cfg.task


def distill_rounds(d: DistillConfig) -> int:
    """How many halvings take ``start_steps`` to ``steps`` (both powers of two)."""
    return (d.start_steps // d.steps).bit_length() - 1


def _validate_distill(cfg: Config) -> None:
    d = cfg.distill
    for name in ("start_steps", "steps"):
        value = getattr(d, name)
        if value < 1 or value & (value - 1):
            raise ConfigError(f"distill.{name} must be a power of two (1, 2, 4, 8, ...), "
                              f"got {value}")
    if d.steps >= d.start_steps:
        raise ConfigError(f"distill.steps ({d.steps}) must be below distill.start_steps "
                          f"({d.start_steps}): each round halves the teacher's steps")
    if d.start_steps > cfg.diffusion.num_train_timesteps:
        raise ConfigError(f"distill.start_steps ({d.start_steps}) must be at most the "
                          f"{cfg.diffusion.num_train_timesteps} training timesteps")
    if d.steps_per_round < 1:
        raise ConfigError(f"distill.steps_per_round must be at least 1, got "
                          f"{d.steps_per_round}")
    if d.guidance is not None and d.guidance < 0:
        raise ConfigError(f"distill.guidance must be >= 0, got {d.guidance}")
    total = distill_rounds(d) * d.steps_per_round
    if is_distillation(cfg) and cfg.train.max_steps != total:
        raise ConfigError(f"train.max_steps of a distillation is its {distill_rounds(d)} "
                          f"rounds x distill.steps_per_round {d.steps_per_round} = {total}, "
                          f"got {cfg.train.max_steps}: set distill.steps_per_round instead")


def _validate_autoencoder(cfg: Config) -> None:
    ae = cfg.autoencoder
    if cfg.task == "autoencoder" and ae.kind in ("none", "vq"):
        raise ConfigError("an autoencoder run needs autoencoder.kind tiny or kl (vq "
                          "autoencoders come with diffusers LDMPipelines; facediff does not "
                          "train them)")
    if not isinstance(ae.vq_config, dict):
        raise ConfigError(f"autoencoder.vq_config must be a mapping of VQModel arguments, got "
                          f"{ae.vq_config!r}")
    if ae.kind == "vq" and not ae.vq_config:
        raise ConfigError("autoencoder.kind vq needs autoencoder.vq_config (the VQModel's "
                          "config, as a diffusers LDMPipeline folder holds it)")
    if ae.kind == "none":
        return
    if not ae.block_out_channels or not all(c > 0 for c in ae.block_out_channels):
        raise ConfigError("autoencoder.block_out_channels must list positive widths")
    for name in ("blocks_per_level", "latent_channels", "disc_width", "disc_layers"):
        if getattr(ae, name) < 1:
            raise ConfigError(f"autoencoder.{name} must be at least 1, got {getattr(ae, name)}")
    for name in ("ssim_weight", "kl_weight", "adv_weight"):
        if getattr(ae, name) < 0:
            raise ConfigError(f"autoencoder.{name} must be >= 0, got {getattr(ae, name)}")
    if ae.train_crop and not latent_factor(cfg) <= ae.train_crop <= cfg.data.image_size:
        raise ConfigError(f"autoencoder.train_crop {ae.train_crop} must be between the factor "
                          f"{latent_factor(cfg)} and data.image_size {cfg.data.image_size}")
    if ae.train_crop % latent_factor(cfg):
        raise ConfigError(f"autoencoder.train_crop {ae.train_crop} must be divisible by the "
                          f"autoencoder's factor {latent_factor(cfg)}")
    if ae.disc_start < 0:
        raise ConfigError(f"autoencoder.disc_start must be >= 0, got {ae.disc_start}")
    for name in ("shift", "scale"):
        values = getattr(ae, name)
        if values and len(values) != ae.latent_channels:
            raise ConfigError(f"autoencoder.{name} has {len(values)} values for "
                              f"{ae.latent_channels} latent channels")
    if any(v <= 0 for v in ae.scale):
        raise ConfigError("autoencoder.scale must be positive")
    if cfg.data.image_size % latent_factor(cfg):
        raise ConfigError(f"data.image_size {cfg.data.image_size} must be divisible by the "
                          f"autoencoder's factor {latent_factor(cfg)}")


def validate(cfg: Config) -> None:
    """Checks that a dataclass field type cannot express."""
    model, data, train = cfg.model, cfg.data, cfg.train
    if data.image_size < 8:
        raise ConfigError(f"data.image_size must be at least 8, got {data.image_size}")
    if data.channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3, got {data.channels}")
    if not model.block_out_channels:
        raise ConfigError("model.block_out_channels must list at least one level")
    _validate_autoencoder(cfg)
    _validate_distill(cfg)
    factor = 2 ** (len(model.block_out_channels) - 1)
    side = sample_shape(cfg)[1]
    if cfg.task == "diffusion" and side % factor:
        what = "data.image_size" if cfg.autoencoder.kind == "none" else "the latent size"
        raise ConfigError(
            f"{what} {side} must be divisible by {factor} "
            f"for {len(model.block_out_channels)} resolution levels"
        )
    for c in model.block_out_channels:
        if c % model.norm_num_groups:
            raise ConfigError(
                f"model.block_out_channels {c} is not divisible by "
                f"model.norm_num_groups {model.norm_num_groups}"
            )
    bad = [i for i in model.attention_levels if not 0 <= i < len(model.block_out_channels)]
    if bad:
        raise ConfigError(
            f"model.attention_levels {bad} out of range 0..{len(model.block_out_channels) - 1}"
        )
    if not 0.0 <= data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {data.val_fraction}")
    for name in ("batch_size", "grad_accum", "max_steps", "log_every", "sample_every",
                 "checkpoint_every", "keep_checkpoints", "val_every", "max_nonfinite_steps"):
        if getattr(train, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(train, name)}")
    if train.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {train.lr}")
    if len(train.adam_betas) != 2:
        raise ConfigError("train.adam_betas must have two values")
    if cfg.diffusion.num_train_timesteps < 2:
        raise ConfigError("diffusion.num_train_timesteps must be at least 2")
    if train.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {train.warmup_steps}")
    if not all(0.0 <= b < 1.0 for b in train.adam_betas):
        raise ConfigError(f"train.adam_betas must be in [0, 1), got {train.adam_betas}")
    if train.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {train.weight_decay}")
    for name in ("cond_drop", "attr_drop"):
        if not 0.0 <= getattr(train, name) < 1.0:
            raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(train, name)}")
    _check_ranges(cfg)
    if train.sample_n < 1:
        raise ConfigError(f"train.sample_n must be at least 1, got {train.sample_n}")
    if train.eval_every < 0:
        raise ConfigError(f"train.eval_every must be >= 0 (0 = off), got {train.eval_every}")
    for name in ("eval_n", "eval_ref_n"):
        if getattr(train, name) < 4:
            raise ConfigError(f"train.{name} must be at least 4, got {getattr(train, name)}")


# (section.key, low, high, whether low itself is allowed): the ranges a value must lie in
_RANGES = [
    ("sample.guidance", 0.0, math.inf, True),
    ("sample.guidance_rescale", 0.0, 1.0, True),
    ("sample.eta", 0.0, 1.0, True),
    ("sample.steps", 1, math.inf, True),
    ("diffusion.beta_start", 0.0, 1.0, False),
    ("diffusion.beta_end", 0.0, 1.0, False),
    ("diffusion.snr_gamma", 0.0, math.inf, False),
    ("model.dropout", 0.0, 1.0, True),
    ("model.layers_per_block", 1, math.inf, True),
    ("model.attention_head_dim", 1, math.inf, True),
    ("model.norm_num_groups", 1, math.inf, True),
    ("train.ema_halflife_images", 1, math.inf, True),
    ("train.ema_rampup", 0.0, math.inf, True),
    ("train.early_stop_min_delta", 0.0, math.inf, True),
    ("train.early_stop_patience", 0, math.inf, True),
    ("data.celeba_crop", 1, math.inf, True),
    ("train.seed", 0, math.inf, True),
]


def _check_ranges(cfg: Config) -> None:
    for key, lo, hi, low_ok in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ((lo <= value if low_ok else lo < value) and value <= hi):
            left = "[" if low_ok else "("
            right = "]" if hi != math.inf else ")"
            raise ConfigError(f"{key} must be in {left}{lo:g}, {hi:g}{right}, got {value}")
    if not all(c > 0 for c in cfg.model.block_out_channels):
        raise ConfigError("model.block_out_channels must all be positive")
    if cfg.diffusion.beta_start >= cfg.diffusion.beta_end:
        raise ConfigError(f"diffusion.beta_start ({cfg.diffusion.beta_start}) must be below "
                          f"diffusion.beta_end ({cfg.diffusion.beta_end})")
    bins = cfg.data.utk_age_bins
    if not bins or any(b <= a for a, b in itertools.pairwise(bins)) or bins[0] < 0:
        raise ConfigError(f"data.utk_age_bins must rise from 0 or more, got {bins}")
