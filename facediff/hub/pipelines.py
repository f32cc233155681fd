"""facediff models as diffusers pipeline folders (``facediff export --format diffusers``).

An unconditional pixel model becomes diffusers' ``DDPMPipeline`` layout: ``model_index.json``,
``unet/`` (its EMA ``UNet2DModel``) and ``scheduler/`` (the sampler and schedule facediff
samples it with by default, e.g. ``DPMSolverMultistepScheduler`` with trailing timesteps),
which ``diffusers.DiffusionPipeline.from_pretrained(DIR)`` loads and runs without facediff:

    pipe = DiffusionPipeline.from_pretrained(DIR)
    faces = pipe(batch_size=16, num_inference_steps=25).images

Conditional and latent models need what ``DDPMPipeline`` does not do (attributes and
classifier-free guidance; decoding latents with the autoencoder, ``vae/``): their folder holds
``FacediffPipeline`` (facediff/hub/facediff_pipeline.py, copied in; it needs only torch and
diffusers), which diffusers runs as custom code:

    pipe = DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)
    faces = pipe(16, attributes={"Smiling": 1}, guidance_scale=3.0).images

``facediff/config.yaml`` rides along (diffusers ignores folders it is not told about), so the
folder also loads back into facediff with everything it was trained with. The folder is
written whole or not at all (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
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
PIPELINE_FILE = "facediff_pipeline.py"  # the conditional / latent pipeline, beside this file


def is_pipeline(path: Path) -> bool:
    """Whether ``path`` is a diffusers pipeline folder (it has ``model_index.json``)."""
    return (Path(path) / INDEX).is_file()


def export_pipeline(model: FaceModel, out: str | Path, *, half: bool = False) -> Path:
    """Write ``model`` as a diffusers pipeline folder (see the module docstring); ``half``
    stores the networks in float16. Unconditional pixel models take diffusers' own
    ``DDPMPipeline``; conditional and latent ones ``FacediffPipeline``, a pipeline file
    (facediff/hub/facediff_pipeline.py) copied into the folder and named by its
    ``model_index.json``, so diffusers runs it without facediff."""
    from diffusers import DDPMPipeline

    from facediff.atomic import publish_dir
    from facediff.diffusion.sampling import make_scheduler

    final = Path(out)
    if final.exists() and not is_pipeline(final) and (not final.is_dir() or any(final.iterdir())):
        raise FacediffError(f"refusing to export into {final}: it exists and is not a diffusers "
                            "pipeline folder (choose a new or empty folder)")
    dtype = torch.float16 if half else torch.float32
    net, cfg = model.net, model.config
    latent = bool(getattr(net, "latent", False))
    s = model.settings()
    # a latent model's x0 estimates are latents, not images in [-1, 1]: never clipped
    scheduler = make_scheduler(s.sampler, cfg.diffusion, s.steps,
                               **({"clip_sample": False} if latent else {}))
    custom = latent or net.cond is not None
    if custom:
        from facediff.hub.facediff_pipeline import FacediffPipeline

        ae = cfg.autoencoder
        pipe = FacediffPipeline(
            _class_table_unet(net, dtype), scheduler,
            _cpu_copy(net.first_stage.net, dtype) if latent else None,
            conditions=model.spec.to_list(), latent_shift=list(ae.shift) if latent else None,
            latent_scale=list(ae.scale) if latent else None,
            guidance_scale=cfg.sample.guidance, guidance_rescale=cfg.sample.guidance_rescale)
    else:
        pipe = DDPMPipeline(unet=_cpu_copy(net.unet, dtype), scheduler=scheduler)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        if custom:  # name the pipeline file, which rides along
            shutil.copyfile(Path(__file__).with_name(PIPELINE_FILE), tmp / PIPELINE_FILE)
            index = _json(tmp / INDEX, "pipeline index")
            index["_class_name"] = [PIPELINE_FILE.removesuffix(".py"), "FacediffPipeline"]
            (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (tmp / FACEDIFF_DIR).mkdir()
        (tmp / FACEDIFF_DIR / "config.yaml").write_text(cfg.to_yaml())
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _class_table_unet(net: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The U-Net as diffusers can load it: a conditional one's condition embedding (a
    bias-free linear map of the slots' soft one-hot, added to the time embedding through an
    identity class embedding) becomes a ``num_class_embeds`` table, the same matrix
    transposed, which FacediffPipeline multiplies the soft one-hot with."""
    from diffusers import UNet2DModel

    if net.cond is None:
        return _cpu_copy(net.unet, dtype)
    config = {k: v for k, v in net.unet.config.items() if not k.startswith("_")}
    config.update(class_embed_type=None, num_class_embeds=net.cond.total)
    twin = UNet2DModel(**config)
    state = {k: v for k, v in net.unet.state_dict().items()}
    state["class_embedding.weight"] = net.cond.proj.weight.detach().t()
    twin.load_state_dict(state)
    return _cpu_copy(twin, dtype)


def _cpu_copy(unet: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The network on the CPU in ``dtype``, contiguous (not channels-last), leaving ``unet``.
    (Cast tensor by tensor: diffusers' ``ModelMixin.to`` warns about dtypes on every call.)"""
    import copy

    twin = copy.deepcopy(unet)
    for t in [*twin.parameters(), *twin.buffers()]:
        t.data = t.data.to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous()
    return twin


# ---- in: a diffusers pipeline folder as a facediff model -------------------------------------
# what a foreign folder may hold besides the U-Net and its scheduler: an LDMPipeline's VQModel
# (``vqvae``); nothing that conditions (a text encoder, class labels) is read by facediff
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
    vq = (index.get("vqvae") or [None, None])[1] == "VQModel"  # LDMPipeline's first stage
    others = parts - _PARTS - ({"vqvae"} if vq else set())
    if unet_class != "UNet2DModel" or others:
        extra = ", ".join(sorted(others)) or f"a {unet_class}"
        raise FacediffError(f"{p} is a {kind} with {extra}: facediff runs unconditional "
                            "UNet2DModel pipelines (DDPMPipeline, DDIMPipeline, and "
                            "LDMPipeline with its VQModel)")
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
    if int(u.get("out_channels", channels)) != channels or (channels not in (1, 3) and not vq):
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
    if vq:
        _vq_first_stage(cfg, _json(p / "vqvae" / "config.json", "VQModel config"), p)
    return cfg


def _vq_first_stage(cfg: Config, v: dict, p: Path) -> None:
    """An LDMPipeline's VQModel as the first stage of ``cfg``: LDMPipeline decodes
    ``latents / scaling_factor``, which is facediff's ``z = latents / scale + shift`` with
    scale = that factor (VQModel's default where its config has none) and shift 0."""
    import inspect

    from diffusers import VQModel

    from facediff.config import AutoencoderConfig

    c = int(v.get("latent_channels", 3))
    if c != cfg.data.channels:
        raise FacediffError(f"{p}'s U-Net takes {cfg.data.channels} channels, its VQModel "
                            f"makes {c}")
    default = inspect.signature(VQModel.__init__).parameters["scaling_factor"].default
    factor = float(v.get("scaling_factor", default))
    widths = list(v.get("block_out_channels", [64]))
    cfg.autoencoder = AutoencoderConfig(
        kind="vq", block_out_channels=widths, latent_channels=c, shift=[0.0] * c,
        scale=[factor] * c, vq_config={k: x for k, x in v.items() if not k.startswith("_")})
    cfg.data.image_size *= 2 ** (len(widths) - 1)
    cfg.data.channels = int(v.get("in_channels", 3))


def read_pipeline(path: str | Path) -> tuple[Config, dict[str, torch.Tensor], str]:
    """(config, the network's weights, source) of a diffusers pipeline folder, as
    ``facediff.train.checkpoint.read_model`` returns them for facediff's own models. A folder
    facediff wrote reads back whole: a conditional U-Net's class-embedding table becomes the
    condition embedding again, a latent model's ``vae/`` its first stage."""
    p = Path(path)
    cfg = pipeline_config(p)
    state = {f"unet.{k}": v for k, v in _weights(p / "unet").items()}
    table = state.pop("unet.class_embedding.weight", None)
    if table is not None:  # facediff's conditional export (foreign ones are refused above)
        state["cond.proj.weight"] = table.t().contiguous()
    for part in ("vae", "vqvae"):  # facediff's latent export; an LDMPipeline's first stage
        if (p / part).is_dir() and index_part(p, part):
            state.update({f"first_stage.net.{k}": v for k, v in _weights(p / part).items()})
    return cfg, state, str(p)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """A diffusers component's weights (safetensors, or a ``.bin`` where it has none)."""
    from safetensors.torch import load_file

    found = next((folder / w for w in _WEIGHTS if (folder / w).is_file()), None)
    if found is None:
        raise FacediffError(f"{folder} has no weights ({' or '.join(_WEIGHTS)})")
    try:
        if found.suffix == ".bin":
            return torch.load(found, map_location="cpu", weights_only=True)
        return load_file(str(found))
    except Exception as e:  # a broken download: name the file
        raise FacediffError(f"cannot read {found}: {type(e).__name__}: {e}") from e


def index_part(folder: Path, name: str) -> bool:
    """Whether a pipeline folder's ``model_index.json`` names a component ``name``."""
    entry = _json(Path(folder) / INDEX, "pipeline index").get(name)
    return bool(entry) and entry[0] is not None
