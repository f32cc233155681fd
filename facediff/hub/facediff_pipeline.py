"""The diffusers pipeline of a conditional or latent facediff model (a custom pipeline file).

``facediff export --format diffusers`` copies this file into the pipeline folder, and its
``model_index.json`` names it (``"_class_name": ["facediff_pipeline", "FacediffPipeline"]``),
so diffusers loads it with the folder and no facediff installed:

    pipe = DiffusionPipeline.from_pretrained(DIR)     # a local folder
    pipe = DiffusionPipeline.from_pretrained("user/name", trust_remote_code=True)  # the Hub
    faces = pipe(16, attributes={"Smiling": 1, "Male": 0}, guidance_scale=3.0).images

It needs only torch and diffusers: keep it free of facediff imports. The sampling is
facediff's (facediff.diffusion.sampling): one generator per image, the scheduler stepped on
the float32 prediction; each condition has its values plus an "unspecified" slot, the soft
one-hot of all of them times the U-Net's class-embedding table is added to the time
embedding; classifier-free guidance mixes the conditional and the all-unspecified
predictions, pred = uncond + w (cond - uncond), in one batched pass. A latent model's U-Net
denoises ``(z - shift) * scale`` and the autoencoder (``vae``) decodes ``z``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

_YES = ("1", "+1", "true", "yes", "on", "y", "t")
_NO = ("0", "-1", "false", "no", "off", "n", "f")


class FacediffPipeline(DiffusionPipeline):
    """A facediff model: ``unet`` (a ``UNet2DModel``; conditional: with ``num_class_embeds``
    = the condition slots), ``scheduler`` and, for a latent model, ``vae``.

    ``conditions``: [{"name", "kind" (binary | categorical), "values"}] in the U-Net's order;
    ``latent_shift`` / ``latent_scale``: per latent channel; ``guidance_scale`` /
    ``guidance_rescale``: the defaults facediff samples with."""

    _optional_components: ClassVar[list[str]] = ["vae"]
    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet: Any, scheduler: Any, vae: Any = None, *,
                 conditions: Sequence[Mapping[str, Any]] | None = None,
                 latent_shift: Sequence[float] | None = None,
                 latent_scale: Sequence[float] | None = None, guidance_scale: float = 3.0,
                 guidance_rescale: float = 0.0) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self.register_to_config(conditions=[dict(c) for c in conditions or []],
                                latent_shift=list(latent_shift or []),
                                latent_scale=list(latent_scale or []),
                                guidance_scale=float(guidance_scale),
                                guidance_rescale=float(guidance_rescale))

    # ---- conditions -------------------------------------------------------------------------
    def _index(self, cond: Mapping[str, Any], value: Any) -> int:
        values = [str(v) for v in cond["values"]]
        v = str(value).strip()
        if cond.get("kind", "binary") == "binary":
            if v.lower() in _YES:
                return 1
            if v.lower() in _NO:
                return 0
        if v in values:
            return values.index(v)
        lowered = [x.lower() for x in values]
        if v.lower() in lowered:
            return lowered.index(v.lower())
        raise ValueError(f"{cond['name']}={value!r}: valid values are {', '.join(values)}")

    def one_hot(self, attributes: Mapping[str, Any] | None) -> torch.Tensor:
        """{name: value} (any subset; None, "any" or absent: unspecified) -> the soft one-hot
        row (slots,) the U-Net's class-embedding table is indexed with."""
        conditions = self.config.conditions
        by_name = {c["name"].lower(): i for i, c in enumerate(conditions)}
        chosen: dict[int, int] = {}
        for name, value in (attributes or {}).items():
            if str(name).lower() not in by_name:
                raise ValueError(f"unknown attribute {name!r}; valid: "
                                 f"{', '.join(c['name'] for c in conditions)}")
            if value is None or str(value).strip().lower() in ("any", "?", ""):
                continue
            i = by_name[str(name).lower()]
            chosen[i] = self._index(conditions[i], value)
        row: list[float] = []
        for i, c in enumerate(conditions):
            slots = [0.0] * (len(c["values"]) + 1)
            slots[chosen.get(i, len(c["values"]))] = 1.0  # the last slot: unspecified
            row += slots
        return torch.tensor(row)

    # ---- sampling ---------------------------------------------------------------------------
    def _predict(self, x: torch.Tensor, t: torch.Tensor, soft: torch.Tensor | None) -> Any:
        if soft is None:
            return self.unet(x, t).sample
        table = self.unet.class_embedding.weight  # (slots, time-embedding width)
        embedding, self.unet.class_embedding = self.unet.class_embedding, torch.nn.Identity()
        try:  # the identity class embedding adds soft @ table to the time embedding
            return self.unet(x, t, class_labels=soft.to(table) @ table).sample
        finally:
            self.unet.class_embedding = embedding

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, *,
                 attributes: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                 guidance_scale: float | None = None, guidance_rescale: float | None = None,
                 num_inference_steps: int = 25, eta: float = 0.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pil", return_dict: bool = True) -> Any:
        """``batch_size`` faces; ``attributes``: one {name: value} for all of them or one per
        face; ``guidance_scale``: classifier-free guidance (default: the model's)."""
        conditional = bool(self.config.conditions)
        if attributes and not conditional:
            raise ValueError("this model is unconditional: it takes no attributes")
        w = self.config.guidance_scale if guidance_scale is None else float(guidance_scale)
        rescale = self.config.guidance_rescale if guidance_rescale is None \
            else float(guidance_rescale)
        device = self._execution_device
        cond = uncond = None
        if conditional:
            rows = attributes if isinstance(attributes, Sequence) else [attributes] * batch_size
            if len(rows) != batch_size:
                raise ValueError(f"{len(rows)} attribute sets for {batch_size} faces")
            cond = torch.stack([self.one_hot(r) for r in rows]).to(device)
            uncond = self.one_hot(None).expand(batch_size, -1).to(device)
            if not any(rows):  # nothing asked: the unconditional model, no guidance
                cond = None
        dtype = self.unet.dtype
        u = self.unet.config
        shape = (batch_size, u.in_channels, u.sample_size, u.sample_size)
        x = randn_tensor(shape, generator=generator, device=torch.device("cpu"),
                         dtype=torch.float32).to(device)
        latent = self.vae is not None
        self.scheduler.set_timesteps(num_inference_steps)
        x = x * self.scheduler.init_noise_sigma
        step_params = inspect.signature(self.scheduler.step).parameters
        extra: dict[str, Any] = {}
        if "generator" in step_params:
            extra["generator"] = generator
        if "eta" in step_params:
            extra["eta"] = eta
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = self.scheduler.scale_model_input(x, t)
            if not conditional:
                pred = self._predict(model_in.to(dtype), t, None)
            elif cond is None or w == 1.0:
                pred = self._predict(model_in.to(dtype), t, uncond if cond is None else cond)
            elif w == 0.0:
                pred = self._predict(model_in.to(dtype), t, uncond)
            else:
                both = self._predict(torch.cat([model_in, model_in]).to(dtype), t,
                                     torch.cat([cond, uncond]))
                c, un = both.float().chunk(2)
                pred = un + w * (c - un)
                if rescale > 0:
                    dims = tuple(range(1, pred.ndim))
                    fixed = pred * (c.std(dim=dims, keepdim=True)
                                    / pred.std(dim=dims, keepdim=True))
                    pred = rescale * fixed + (1 - rescale) * pred
            x = self.scheduler.step(pred.float(), t, x, **extra).prev_sample
        if latent:
            channels = x.shape[1]
            shift = torch.tensor(self.config.latent_shift or [0.0] * channels)
            scale = torch.tensor(self.config.latent_scale or [1.0] * channels)
            z = x / scale.view(1, -1, 1, 1).to(x) + shift.view(1, -1, 1, 1).to(x)
            x = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        image = (x.clamp(-1, 1) / 2 + 0.5).cpu().permute(0, 2, 3, 1).numpy()
        if output_type == "pil":
            image = self.numpy_to_pil(image)
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
