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

