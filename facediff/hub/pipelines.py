"""facediff models as diffusers pipeline folders (``facediff export --format diffusers``).

An unconditional pixel model becomes diffusers' ``DDPMPipeline`` layout: ``model_index.json``,
``unet/`` (its EMA ``UNet2DModel``) and ``scheduler/`` (the sampler and schedule facediff
samples it with by default, e.g. ``DPMSolverMultistepScheduler`` with trailing timesteps),
which ``diffusers.DiffusionPipeline.from_pretrained(DIR)`` loads and runs without facediff:

    pipe = DiffusionPipeline.from_pretrained(DIR)
    faces = pipe(batch_size=16, num_inference_steps=25).images

``facediff/config.yaml`` rides along (diffusers ignores folders it is not told about), so the
folder also loads back into facediff with everything it was trained with. The folder is
written whole or not at all (a temporary folder renamed into place).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.config import Config

FACEDIFF_DIR = "facediff"  # facediff's own config inside a pipeline folder
INDEX = "model_index.json"


def is_pipeline(path: Path) -> bool:
    """Whether ``path`` is a diffusers pipeline folder (it has ``model_index.json``)."""
    return (Path(path) / INDEX).is_file()


def export_pipeline(model: FaceModel, out: str | Path, *, half: bool = False) -> Path:
    """Write ``model`` as a diffusers pipeline folder (see the module docstring); ``half``
    stores the U-Net in float16. Conditional and latent models are refused in one line (not
    yet exported)."""
    from diffusers import DDPMPipeline

    from facediff.atomic import publish_dir
    from facediff.diffusion.sampling import make_scheduler

    if len(model.spec):
        raise FacediffError(f"{model.source} is conditional: the diffusers export covers "
                            "unconditional models so far")
    if getattr(model.net, "latent", False):
        raise FacediffError(f"{model.source} is a latent model: the diffusers export covers "
                            "pixel models so far")
    final = Path(out)
    if final.exists() and not is_pipeline(final) and (not final.is_dir() or any(final.iterdir())):
        raise FacediffError(f"refusing to export into {final}: it exists and is not a diffusers "
                            "pipeline folder (choose a new or empty folder)")
    s = model.settings()
    scheduler = make_scheduler(s.sampler, model.config.diffusion, s.steps)
    unet = _cpu_copy(model.net.unet, torch.float16 if half else torch.float32)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(
            str(tmp), safe_serialization=True)
        (tmp / FACEDIFF_DIR).mkdir()
        (tmp / FACEDIFF_DIR / "config.yaml").write_text(model.config.to_yaml())
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _cpu_copy(unet: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The U-Net on the CPU in ``dtype``, contiguous (not channels-last), leaving ``unet``."""
    import copy

    twin = copy.deepcopy(unet).to("cpu", dtype)
    for p in twin.parameters():
        p.data = p.data.contiguous()
    return twin



# ---- in: a diffusers pipeline folder as a facediff model -------------------------------------
# what the folder may hold besides the U-Net and its scheduler: nothing that conditions or
# decodes (a VAE, a text encoder, class labels) is read by facediff yet
_PARTS = {"unet", "scheduler"}
_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
# U-Net config keys facediff's ModelConfig holds itself (or derives), the rest ride along in
# model.unet_extra
_CORE = {"sample_size", "in_channels", "out_channels", "block_out_channels",
         "layers_per_block", "down_block_types", "up_block_types", "attention_head_dim",
         "add_attention", "dropout", "norm_num_groups", "resnet_time_scale_shift",
         "class_embed_type", "num_class_embeds"}
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.bin")


def _json(path: Path, what: str) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FacediffError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(data, dict):
        raise FacediffError(f"{path} is not a {what}")
    return data


def pipeline_config(path: str | Path) -> Config:
    """The facediff config of a diffusers pipeline folder: its own (``facediff/config.yaml``)
    when facediff wrote it, else one read from the U-Net's and the scheduler's configs. A
    pipeline facediff cannot run (not an unconditional ``UNet2DModel`` one) is a
    ``FacediffError`` saying what it has."""
    from facediff.config import Config, DiffusionConfig, ModelConfig
    from facediff.diffusion.objectives import BETA_SCHEDULES, PREDICTION_TYPES

    p = Path(path)
    own = p / FACEDIFF_DIR / "config.yaml"
    if own.is_file():
        return Config.load(own)
    index = _json(p / INDEX, "pipeline index")
    parts = {k for k, v in index.items() if not k.startswith("_") and v and v[0] is not None}
    kind = index.get("_class_name", "?")
    unet_class = (index.get("unet") or [None, None])[1]
    if unet_class != "UNet2DModel" or parts - _PARTS:
        extra = ", ".join(sorted(parts - _PARTS)) or f"a {unet_class}"
        raise FacediffError(f"{p} is a {kind} with {extra}: facediff runs unconditional "
                            "UNet2DModel pipelines (DDPMPipeline, DDIMPipeline)")
    u = _json(p / "unet" / "config.json", "U-Net config")
    s = _json(p / "scheduler" / "scheduler_config.json", "scheduler config")
    if u.get("class_embed_type") or u.get("num_class_embeds"):
        raise FacediffError(f"{p}'s U-Net is class-conditional: not supported yet")
    down, up = list(u.get("down_block_types", [])), list(u.get("up_block_types", []))
    if not set(down) <= set(_BLOCKS) or not set(up) <= set(_UP_BLOCKS):
        raise FacediffError(f"{p}'s U-Net has blocks facediff does not build: "
                            f"{', '.join(sorted(set(down + up) - set(_BLOCKS) - set(_UP_BLOCKS)))}")
    levels = [i for i, b in enumerate(down) if _BLOCKS[b]]
    if [i for i, b in enumerate(reversed(up)) if _UP_BLOCKS[b]] != levels:
        raise FacediffError(f"{p}'s U-Net has attention at different levels going down and up")
    channels = int(u.get("in_channels", 3))
    if channels not in (1, 3) or int(u.get("out_channels", channels)) != channels:
        raise FacediffError(f"{p}'s U-Net takes {channels} channels: facediff runs 1 or 3")
    schedule = {v: k for k, v in BETA_SCHEDULES.items()}.get(s.get("beta_schedule", "linear"))
    prediction = {v: k for k, v in PREDICTION_TYPES.items()}.get(
        s.get("prediction_type", "epsilon"))
    if schedule is None or prediction is None or s.get("trained_betas") is not None:
        raise FacediffError(f"{p}'s scheduler has a schedule facediff does not build "
                            f"({s.get('beta_schedule')}, {s.get('prediction_type')})")
    cfg = Config()
    cfg.model = ModelConfig(
        block_out_channels=list(u["block_out_channels"]),
        layers_per_block=int(u.get("layers_per_block", 2)), attention_levels=levels,
        attention_head_dim=int(u.get("attention_head_dim") or 8),
        mid_attention=bool(u.get("add_attention", True)), dropout=float(u.get("dropout", 0.0)),
        norm_num_groups=int(u.get("norm_num_groups", 32)),
        resnet_time_scale_shift=u.get("resnet_time_scale_shift", "default"),
        unet_extra={k: v for k, v in u.items() if not k.startswith("_") and k not in _CORE})
    cfg.diffusion = DiffusionConfig(
        num_train_timesteps=int(s.get("num_train_timesteps", 1000)), beta_schedule=schedule,
        beta_start=float(s.get("beta_start", 0.0001)), beta_end=float(s.get("beta_end", 0.02)),
        rescale_zero_snr=bool(s.get("rescale_betas_zero_snr", False)), prediction=prediction)
    cfg.data.image_size = int(u.get("sample_size", 64))
    cfg.data.channels = channels
    cfg.data.path = str(p)
    return cfg


def read_pipeline(path: str | Path) -> tuple[Config, dict[str, torch.Tensor], str]:
    """(config, the network's weights, source) of a diffusers pipeline folder, as
    ``facediff.train.checkpoint.read_model`` returns them for facediff's own models."""
    from safetensors.torch import load_file

    p = Path(path)
    cfg = pipeline_config(p)
    found = next((p / "unet" / w for w in _WEIGHTS if (p / "unet" / w).is_file()), None)
    if found is None:
        raise FacediffError(f"{p}/unet has no weights ({' or '.join(_WEIGHTS)})")
    try:
        if found.suffix == ".bin":
            state = torch.load(found, map_location="cpu", weights_only=True)
        else:
            state = load_file(str(found))
    except Exception as e:  # a broken download: name the file
        raise FacediffError(f"cannot read {found}: {type(e).__name__}: {e}") from e
    return cfg, {f"unet.{k}": v for k, v in state.items()}, str(p)
