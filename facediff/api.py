"""The Python API: ``facediff.load(path).sample(n=16, steps=25, seed=0)``.

``facediff.load()`` with no path loads the bundled face model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from facediff.allocator import tune_allocator
from facediff.assets import resolve_model
from facediff.config import Config
from facediff.data.conditions import (
    UNSPECIFIED,
    ConditionSpec,
    parse_requests,
    spec_from_conditions,
)
from facediff.data.transforms import array_to_image
from facediff.device import (
    autocast,
    check_precision,
    default_device,
    resolve_device,
    resolve_precision,
)
from facediff.diffusion.samplers import SamplingSettings
from facediff.diffusion.sampling import Callback, generate
from facediff.errors import FacediffError
from facediff.model import Network, build_net
from facediff.train.checkpoint import CorruptError, export_model, read_model, source_step

__all__ = ["Attrs", "FaceModel", "default_device", "load"]

Attrs = Mapping[str, object] | Sequence[str] | None
# On CPUs, U-Nets of at least this input size run channels-last. Measured on the 2-core CPU,
# 25 steps, batch 128 (bench/precision.py, docs/performance.md): a 64 px U-Net 1.28x faster in
# bf16 and 1.28x in fp32; a 32 px one within the noise in bf16 (1.15-1.36x in fp32); a latent
# model's 16 px U-Net 0.9x in bf16. So only from 64 px.
CHANNELS_LAST_FROM = 64


@dataclass
class FaceModel:
    """A trained model ready to sample: its config and its (EMA) network.

    ``precision``: what its network runs in (``auto``, ``fp32``, ``bf16`` or ``fp16``;
    ``auto`` resolves per device, see ``facediff.device.resolve_precision``). The weights
    stay fp32; bf16/fp16 is autocast, so the sampler's arithmetic stays fp32.
    """

    config: Config
    net: Network
    source: str = ""
    precision: str = "auto"
    step: int | None = None  # the training step of its weights (None: not recorded)
    path: Path | None = None  # the folder its weights came from (an export or a checkpoint)

    def __post_init__(self) -> None:
        check_precision(self.precision)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> str:
        """The resolved precision on the model's device: ``fp32``, ``bf16`` or ``fp16``."""
        return resolve_precision(self.precision, self.device)

    def autocast(self) -> torch.autocast:
        """The context the network runs in (every sampling, editing and decoding call)."""
        return autocast(self.dtype, self.device)

    @property
    def spec(self) -> ConditionSpec:
        """The conditions this model can be asked for (empty: unconditional)."""
        return spec_from_conditions(self.config.conditions)

    def to(self, device: str | torch.device) -> FaceModel:
        self.net.to(device)
        return self

    def settings(self, settings: SamplingSettings | None = None,
                 **changes: object) -> SamplingSettings:
        """``settings`` (default: all the model's defaults) with ``changes`` applied (None
        changes nothing), resolved against this model's ``config.sample``."""
        base = settings if settings is not None else SamplingSettings()
        return base.override(**changes).resolve(self.config.sample)

    def labels(self, attrs: Attrs) -> torch.Tensor:
        """Requested attributes -> value indices (K,), UNSPECIFIED where not requested.

        ``attrs``: {"Smiling": 1, "race": "Asian"} or ["Smiling=1", "race=Asian"].
        """
        if attrs is None:
            attrs = []
        if isinstance(attrs, Mapping):
            attrs = [f"{k}={v}" for k, v in attrs.items()]
        return torch.tensor(parse_requests(self.spec, list(attrs)), dtype=torch.long)

    def cond(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Value indices (K,) or (N, K) -> soft one-hot conditions (None: unconditional)."""
        if self.net.cond is None or bool((labels == UNSPECIFIED).all()):  # nothing asked
            return None
        return self.net.cond.one_hot(labels.reshape(-1, labels.shape[-1]).to(self.device))

    def sample_tensor(
        self, n: int = 16, steps: int | None = None, sampler: str | None = None,
        seed: int | None = None, *, batch_size: int | None = None, eta: float | None = None,
        guidance: float | None = None, guidance_rescale: float | None = None,
        settings: SamplingSettings | None = None, attrs: Attrs = None,
        cond: torch.Tensor | None = None, noise: torch.Tensor | None = None,
        callback: Callback | None = None, progress: bool = False,
    ) -> torch.Tensor:
        """``n`` images as uint8 N x H x W x C (CPU), optionally with attributes fixed.

        How to sample: ``settings``, with any of the single settings given here replacing
        its field; what is left unset is the model's default (``config.sample``).
        ``cond`` (soft one-hot rows, see ``cond``) replaces ``attrs``; ``noise`` gives each
        image's x_T.
        """
        s = self.settings(settings, steps=steps, sampler=sampler, seed=seed,
                          batch_size=batch_size, eta=eta, guidance=guidance,
                          guidance_rescale=guidance_rescale)
        if cond is None:
            cond = self.cond(self.labels(attrs))
        with self.autocast():
            return generate(self.net, self.config.diffusion, n, s, cond=cond, noise=noise,
                            callback=callback, progress=progress)

    def sample(
        self, n: int = 16, steps: int | None = None, sampler: str | None = None,
        seed: int | None = None, *, batch_size: int | None = None, eta: float | None = None,
        guidance: float | None = None, settings: SamplingSettings | None = None,
        attrs: Attrs = None, progress: bool = False,
    ) -> list[Image.Image]:
        """``n`` images as PIL images; the same seed gives the same images at any batch size."""
        arr = self.sample_tensor(n, steps, sampler, seed=seed, batch_size=batch_size, eta=eta,
                                 guidance=guidance, settings=settings, attrs=attrs,
                                 progress=progress).numpy()
        return [array_to_image(a) for a in arr]

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Export as config.yaml + weights.safetensors (optionally in float16)."""
        return export_model(path, self.config, self.net.state_dict(),
                            dtype=torch.float16 if half else None, step=self.step)


def load(path: str | Path | None = None, device: str | torch.device | None = None,
         conditional: bool = False, precision: str = "auto") -> FaceModel:
    """Load an exported model dir, a run dir (its export or latest checkpoint's EMA) or a
    bundled model by name (``facediff.assets.BUNDLED``).

    With no path: the bundled unconditional face model, or with ``conditional=True`` the
    bundled attribute-conditional one. ``device``: default the best one here;
    ``precision``: ``auto`` (bf16 where the device computes it natively), ``fp32``,
    ``bf16`` or ``fp16``.
    """
    check_precision(precision)
    dev = resolve_device(device) if isinstance(device, str) else (device or default_device())
    cfg, weights, source = read_model(path, conditional)
    if cfg.task != "diffusion":
        raise FacediffError(f"{source} is an autoencoder, not a diffusion model (train a "
                            f"latent model on it with: facediff train --autoencoder {path})")
    net = build_net(cfg)
    try:
        net.load_state_dict({k: v.float() for k, v in weights.items()})
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CorruptError(f"the weights of {source} do not fit the network its config.yaml "
                           f"describes ({detail})") from None
    net.eval().requires_grad_(False).to(dev)
    if dev.type == "cpu":
        # what the CLI does for every command: in Python too, 1,000 faces of celebahq-64 took
        # 139 s with it and 247 s without (batches of 64, bf16, 2-core Xeon; facediff/allocator.py)
        tune_allocator()
    if dev.type == "cpu" and net.config.sample_size >= CHANNELS_LAST_FROM:
        net.to(memory_format=torch.channels_last)
    where = resolve_model(path, conditional) if source.startswith("bundled ") else Path(source)
    return FaceModel(cfg, net, source, precision, source_step(path, source, conditional), where)


def load_editor(model: FaceModel) -> FaceModel:
    """The model that edits photos for ``model``. A distilled few-step model
    (``facediff distill``) was trained for its own few DDIM steps only, so it cannot invert a
    photo over the many steps an edit takes: its teacher does that, followed back through a
    chain of distillations to the original model, loaded on the same device in the same
    precision. A model that is not distilled, or whose teacher is nowhere to be found (a path
    from another machine), edits with itself."""
    from facediff.errors import ModelNotFoundError

    cfg = model.config
    found_name: str | None = None
    for _ in range(8):  # a distillation of a distillation of ...: at most a few links
        name = cfg.distill.teacher
        if not (cfg.distill.teacher_digest and name):
            break
        try:
            cfg = read_model(resolve_model(name))[0]
        except (ModelNotFoundError, FacediffError):
            break
        found_name = name  # a bundled name stays a name: the source reads "bundled ..."
    if found_name is None:
        return model
    return load(found_name, device=model.device, precision=model.precision)
