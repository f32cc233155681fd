"""How well the first stage (the image autoencoder of latent diffusion) reconstructs held-out
images: PSNR, SSIM, reconstruction FID and its encode/decode speed.

Each image goes uint8 -> [-1, 1] (``uint8_to_model``) -> ``encode`` (the posterior mean for a
KL autoencoder) -> ``decode``, and the reconstruction is clamped to [-1, 1]. Then, per image,

    PSNR = 10 log10(4 / MSE)    (peak-to-peak 2 on [-1, 1]; MSE floored at 1e-10, so a
                                 perfect reconstruction scores 106.02 dB, not infinity)
    SSIM = pytorch-msssim's SSIM on [0, 1] float32, data_range 1, a 7-pixel Gaussian window
           (so 16 px images work; the training loss uses the same window)

both on the float reconstruction, before it is rounded to uint8, and averaged over images.
rFID is the Frechet distance between Inception features of the reconstructions (rounded to
uint8, as a PNG would store them, which is the features' protocol) and of their originals
(Rombach et al. 2022 report it for their first stages); it needs a feature extractor
(``facediff.eval.features.InceptionFeatures``) and at least 2 images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from facediff.data.transforms import model_to_uint8, uint8_to_model
from facediff.errors import FacediffError
from facediff.eval.features import FeatureExtractor, extract_features
from facediff.eval.metrics import frechet_distance

MSE_FLOOR = 1e-10
SSIM_WINDOW = 7


class Autoencoder(Protocol):
    """What is scored: ``FirstStage`` or anything with its ``encode`` and ``decode``."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass
class ReconstructionScores:
    """Reconstruction quality of ``n`` images and the first stage's speed on them.

    ``psnr`` in dB and ``ssim`` are means over images; ``rfid`` is None when no feature
    extractor was given; ``encode_img_s`` and ``decode_img_s`` are throughputs in images per
    second (batches as scored, first batch included)."""

    n: int
    psnr: float
    ssim: float
    rfid: float | None
    encode_img_s: float
    decode_img_s: float

    def as_dict(self) -> dict[str, float | int | None]:
        """The scores as a plain dict (for JSON)."""
        return asdict(self)

    def line(self) -> str:
        """One human line, e.g. ``PSNR 27.61 dB, SSIM 0.908, rFID 12.30 (n=2000)``."""
        parts = [f"PSNR {self.psnr:.2f} dB", f"SSIM {self.ssim:.3f}"]
        if self.rfid is not None:
            parts.append(f"rFID {self.rfid:.2f}")
        return ", ".join(parts) + f" (n={self.n})"


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"expected uint8 images (N, H, W, C), got shape {shape}")
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if len(images) == 0:
        raise FacediffError("no images to reconstruct")


def _resolve_device(first_stage: Autoencoder, device: str | torch.device | None) -> torch.device:
    """``device`` (the first stage is moved there), else where its parameters are (CPU for
    a first stage without parameters)."""
    if device is not None:
        dev = torch.device(device)
        if isinstance(first_stage, nn.Module):
            first_stage.to(dev)
        return dev
    if isinstance(first_stage, nn.Module):
        p = next(iter(first_stage.parameters()), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _batches(first_stage: Autoencoder, images: np.ndarray, batch_size: int,
             device: torch.device, progress: bool,
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor, float, float]]:
    """Per batch: the originals and the clamped float reconstructions (NCHW, [-1, 1], on
    ``device``) and the seconds encoding and decoding took. Call under inference mode."""
    from tqdm.auto import tqdm

    with tqdm(total=len(images), desc="reconstruct", unit="img", disable=not progress,
              leave=False) as bar:
        for s in range(0, len(images), batch_size):
            x = uint8_to_model(torch.from_numpy(np.array(images[s:s + batch_size])))
            x = x.to(device)
            _sync(device)
            t0 = time.perf_counter()
            z = first_stage.encode(x)[0]
            _sync(device)
            t1 = time.perf_counter()
            y = first_stage.decode(z)
            _sync(device)
            t2 = time.perf_counter()
            if y.shape != x.shape:
                raise FacediffError(
                    f"the autoencoder turned images of shape {tuple(x.shape[1:])} into "
                    f"{tuple(y.shape[1:])} (the image size must be a multiple of its spatial "
                    "factor, and the channels its own)")
            yield x, y.float().clamp(-1, 1), t1 - t0, t2 - t1
            bar.update(len(x))


class _EvalMode:
    """Inference mode, and the first stage in eval mode (its own mode restored after)."""

    def __init__(self, first_stage: Autoencoder) -> None:
        self.module = first_stage if isinstance(first_stage, nn.Module) else None
        self.was_training = False
        self.inference = torch.inference_mode()

    def __enter__(self) -> None:
        if self.module is not None:
            self.was_training = self.module.training
            self.module.eval()
        self.inference.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.inference.__exit__(*exc)
        if self.module is not None:
            self.module.train(self.was_training)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def reconstruct(first_stage: Autoencoder, images: np.ndarray, *, batch_size: int = 64,
                device: str | torch.device | None = None,
                progress: bool = False) -> tuple[np.ndarray, float, float]:
    """Encode and decode uint8 NHWC images: their reconstructions (uint8 NHWC, the same
    shape), and the total seconds spent encoding and decoding.

    Runs under ``torch.inference_mode()`` with the first stage in eval mode (restored after).
    ``device``: where to run (the first stage is moved there); by default where its
    parameters are. ``progress``: a tqdm bar. Empty input is a ``FacediffError``."""
    _check_images(images)
    _check_batch_size(batch_size)
    dev = _resolve_device(first_stage, device)
    out: list[np.ndarray] = []
    enc = dec = 0.0
    with _EvalMode(first_stage):
        for _, y, te, td in _batches(first_stage, images, batch_size, dev, progress):
            out.append(model_to_uint8(y).cpu().numpy())
            enc += te
            dec += td
    return np.concatenate(out), enc, dec


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of ``y`` against ``x``, both NCHW in [-1, 1] (peak-to-peak 2)."""
    mse = (y.double() - x.double()).square().flatten(1).mean(dim=1).clamp_min(MSE_FLOOR)
    return 10.0 * torch.log10(4.0 / mse)


def _ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of ``y`` against ``x`` (NCHW in [-1, 1]), on [0, 1] in float32."""
    from pytorch_msssim import ssim

    return ssim((y.float() + 1) / 2, (x.float() + 1) / 2, data_range=1.0,
                win_size=SSIM_WINDOW, size_average=False)


def score_reconstructions(
    first_stage: Autoencoder, images: np.ndarray, *,
    extractor: FeatureExtractor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64, device: str | torch.device | None = None, progress: bool = False,
) -> ReconstructionScores:
    """PSNR, SSIM, rFID (with ``extractor``) and encode/decode speed of ``first_stage`` on
    uint8 NHWC ``images``.

    PSNR and SSIM compare the float reconstruction, clamped to [-1, 1] but *before* it is
    rounded to uint8, with the original (exactly its uint8 pixels on [-1, 1]); rFID compares
    the features of the uint8-rounded reconstructions with those of the originals. Images
    must be at least 7 px a side (the SSIM window). Empty input, or fewer than 2 images when
    rFID is asked for, is a ``FacediffError``."""
    _check_images(images)
    _check_batch_size(batch_size)
    if min(images.shape[1:3]) < SSIM_WINDOW:
        raise FacediffError(f"SSIM needs images of at least {SSIM_WINDOW} px a side, got "
                            f"{images.shape[1]}x{images.shape[2]}")
    if extractor is not None and len(images) < 2:
        raise FacediffError(f"rFID needs at least 2 images, got {len(images)}")
    dev = _resolve_device(first_stage, device)
    psnrs: list[torch.Tensor] = []
    ssims: list[torch.Tensor] = []
    recon: list[np.ndarray] = []
    enc = dec = 0.0
    with _EvalMode(first_stage):
        for x, y, te, td in _batches(first_stage, images, batch_size, dev, progress):
            psnrs.append(_psnr(x, y).cpu())
            ssims.append(_ssim(x, y).double().cpu())
            if extractor is not None:
                recon.append(model_to_uint8(y).cpu().numpy())
            enc += te
            dec += td
    rfid = None
    if extractor is not None:
        real = extract_features(images, extractor, batch_size=batch_size, progress=progress,
                                desc="features (originals)")
        fake = extract_features(np.concatenate(recon), extractor, batch_size=batch_size,
                                progress=progress, desc="features (reconstructions)")
        rfid = frechet_distance(real, fake)
    n = len(images)
    return ReconstructionScores(
        n=n, psnr=float(torch.cat(psnrs).mean()), ssim=float(torch.cat(ssims).mean()),
        rfid=rfid, encode_img_s=n / max(enc, 1e-9), decode_img_s=n / max(dec, 1e-9))


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def card_section(scores: ReconstructionScores, *, split: str, source: str) -> str:
    """A model card's "## Reconstruction quality" section: a table of the scores, with the
    split they were measured on (e.g. "held-out 10%, seed 0"), the data's source and n."""
    rfid = "not measured" if scores.rfid is None else f"{scores.rfid:.2f}"
    rows = [
        ("Images (n)", f"{scores.n}"),
        ("Split", _cell(split)),
        ("Source", _cell(source)),
        ("PSNR", f"{scores.psnr:.2f} dB"),
        ("SSIM", f"{scores.ssim:.3f}"),
        ("rFID", rfid),
        ("Encode speed", f"{scores.encode_img_s:.1f} img/s"),
        ("Decode speed", f"{scores.decode_img_s:.1f} img/s"),
    ]
    lines = [
        "## Reconstruction quality",
        "",
        f"Each of {scores.n} images of the {_cell(split)} split ({_cell(source)}) encoded to "
        "latents and decoded back.",
        "",
        "| Metric | Value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "PSNR: mean over images of 10·log10(4 / MSE) on pixels in [-1, 1], the reconstruction "
        "clamped to that range. SSIM: mean per-image SSIM on [0, 1] with a 7-pixel Gaussian "
        "window. Both on the float reconstruction, before rounding to 8 bits. rFID: Fréchet "
        "Inception distance of the 8-bit reconstructions against their originals. Speeds: "
        "images per second on the machine that scored them.",
        "",
    ]
    return "\n".join(lines)
