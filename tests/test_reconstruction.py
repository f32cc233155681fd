"""Scoring the first stage on held-out images (facediff.eval.reconstruction): PSNR/SSIM maths
against hand-computed values, rFID with a tiny stand-in feature network (no Inception
weights), the speeds, the errors and the model-card section."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from facediff.data.transforms import model_to_uint8, uint8_to_model
from facediff.errors import FacediffError
from facediff.eval.reconstruction import (
    ReconstructionScores,
    card_section,
    reconstruct,
    score_reconstructions,
)
from facediff.model.autoencoder import build_autoencoder

FLOOR_DB = 10 * math.log10(4 / 1e-10)  # 106.02 dB: a perfect reconstruction


class SmallFeatures:
    """A fixed random conv net: uint8 NHWC -> 16 features (a stand-in for Inception)."""

    ident = "small-test-net"
    num_features = 16

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(8, 3, 3, 3, generator=g) / 5
        self.seen = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8
        self.seen += len(images)
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.relu(F.conv2d(x, self.w, padding=1))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class Identity:
    """A first stage whose decode returns exactly what encode gave it: the image."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.clone(), x.new_zeros(())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.clone()


class Offset(Identity):
    """Decode adds ``offsets[i]`` to image i (in call order, across batches)."""

    def __init__(self, offsets: list[float]) -> None:
        self.offsets = offsets
        self.at = 0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        d = torch.tensor(self.offsets[self.at:self.at + len(z)], dtype=z.dtype)
        self.at += len(z)
        return z + d.view(-1, 1, 1, 1)


class Noisy(Identity):
    """Decode adds Gaussian noise of a fixed seed."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma
        self.g = torch.Generator().manual_seed(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.sigma * torch.randn(z.shape, generator=self.g)


class Constant(Identity):
    """Decode returns 3.0 everywhere: far outside [-1, 1], so clamped to 1."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full_like(z, 3.0)


def _images(n: int = 8, size: int = 16, channels: int = 3, hi: int = 256,
            seed: int = 0) -> np.ndarray:
    """Smooth-ish random uint8 images (blurred noise, so SSIM has structure to lose)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((n, channels, size, size), dtype=np.float32))
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return (x * (hi - 1)).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of uint8 NHWC ``b`` against ``a`` written out from Wang et al. (2004): a 7 x 7
    Gaussian window (sigma 1.5, valid positions only), K = (0.01, 0.03), on [0, 1]."""
    x = torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255
    y = torch.from_numpy(b).permute(0, 3, 1, 2).double() / 255
    t = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(t ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(x.shape[1], 1, 7, 7)

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v, win, groups=v.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(m.mean(dim=(1, 2, 3)).mean())


def test_identity_hits_the_psnr_floor_and_scores_perfectly():
    imgs = _images(8)
    s = score_reconstructions(Identity(), imgs, extractor=SmallFeatures(), batch_size=3)
    assert s.n == 8
    assert s.psnr == pytest.approx(FLOOR_DB, abs=1e-6)  # mse 0 -> floored at 1e-10
    assert s.ssim == pytest.approx(1.0, abs=1e-5)
    assert s.rfid is not None and abs(s.rfid) < 1e-4
    assert s.encode_img_s > 0 and s.decode_img_s > 0


def test_psnr_is_the_mean_over_images_on_peak_to_peak_two():
    imgs = _images(8, hi=201)  # x <= 0.577 on [-1, 1], so x + 0.16 is never clamped
    offsets = [0.02 * (i + 1) for i in range(8)]
    s = score_reconstructions(Offset(offsets), imgs, batch_size=3)
    want = np.mean([10 * math.log10(4 / d ** 2) for d in offsets])
    assert s.psnr == pytest.approx(want, abs=1e-3)
    # not 10 log10(4 / mean MSE), not peak 1 or 255
    assert abs(s.psnr - 10 * math.log10(4 / np.mean(np.square(offsets)))) > 0.5
    assert s.rfid is None


def test_reconstruction_is_clamped_before_scoring():
    imgs = _images(4)
    s = score_reconstructions(Constant(), imgs)
    x = imgs.astype(np.float64) / 127.5 - 1
    mse = ((1.0 - x) ** 2).reshape(4, -1).mean(axis=1)
    assert s.psnr == pytest.approx(np.mean(10 * np.log10(4 / mse)), abs=1e-4)


def test_ssim_matches_the_formula_written_out():
    imgs = _images(6, seed=2)
    # quantised noise, so the float reconstruction the score sees is the uint8 one exactly
    rng = np.random.default_rng(3)
    noisy = np.clip(imgs.astype(np.int16) + rng.integers(-40, 41, imgs.shape), 0, 255)
    noisy = noisy.astype(np.uint8)

    class Table(Identity):
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return uint8_to_model(torch.from_numpy(noisy))

    s = score_reconstructions(Table(), imgs, batch_size=6)
    want = _reference_ssim(imgs, noisy)
    assert 0.1 < want < 0.95
    assert s.ssim == pytest.approx(want, abs=1e-4)


def test_degraded_reconstructions_score_worse_than_identity():
    imgs = _images(16)
    net = SmallFeatures()
    ident = score_reconstructions(Identity(), imgs, extractor=net, batch_size=5)
    noisy = score_reconstructions(Noisy(0.2), imgs, extractor=net, batch_size=5)
    assert noisy.psnr < ident.psnr - 50
    assert 10 < noisy.psnr < 25  # sigma 0.2: 10 log10(4 / 0.04) = 20 dB, a bit more clamped
    assert noisy.ssim < ident.ssim - 0.1
    assert noisy.rfid is not None and ident.rfid is not None
    assert noisy.rfid > ident.rfid + 0.01
    assert net.seen == 4 * 16  # originals and reconstructions, twice


@pytest.mark.parametrize("channels", [3, 1])
def test_reconstruct_shapes_and_dtypes(channels: int):
    imgs = _images(7, channels=channels)
    out, enc, dec = reconstruct(Identity(), imgs, batch_size=3, progress=True)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    np.testing.assert_array_equal(out, imgs)  # uint8 -> [-1, 1] -> uint8 is exact
    assert enc >= 0 and dec >= 0


def test_bad_input_is_refused_clearly():
    with pytest.raises(FacediffError, match="no images"):
        reconstruct(Identity(), np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(FacediffError, match="no images"):
        score_reconstructions(Identity(), np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(FacediffError, match="at least 2"):
        score_reconstructions(Identity(), _images(1), extractor=SmallFeatures())
    assert score_reconstructions(Identity(), _images(1)).n == 1  # fine without rFID
    with pytest.raises(TypeError, match="uint8"):
        reconstruct(Identity(), np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="N, H, W, C"):
        reconstruct(Identity(), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(FacediffError, match="7 px"):
        score_reconstructions(Identity(), np.zeros((2, 6, 6, 3), np.uint8))


def test_tiny_autoencoder_end_to_end():
    torch.manual_seed(0)
    first = build_autoencoder("tiny", 3, block_out_channels=(8, 8), blocks_per_level=1,
                              latent_channels=4)
    assert first.training
    imgs = _images(6)
    out, enc, dec = reconstruct(first, imgs, batch_size=4)
    assert out.shape == imgs.shape and out.dtype == np.uint8 and enc > 0 and dec > 0
    with torch.inference_mode():
        x = uint8_to_model(torch.from_numpy(imgs))
        direct = model_to_uint8(first.decode(first.encode(x)[0])).numpy()
    np.testing.assert_array_equal(out, direct)

    s = score_reconstructions(first, imgs, extractor=SmallFeatures(), batch_size=4)
    assert first.training  # its mode is restored
    assert math.isfinite(s.psnr) and 0 < s.psnr < FLOOR_DB - 1
    assert -1 <= s.ssim < 1
    assert s.rfid is not None and math.isfinite(s.rfid) and s.rfid > 0
    assert s.encode_img_s > 0 and s.decode_img_s > 0
    assert "PSNR" in s.line() and "(n=6)" in s.line()

    # 17 px does not survive a factor-2 round trip: a clear error, not a broadcast failure
    with pytest.raises(FacediffError, match="multiple of its spatial factor"):
        reconstruct(first, _images(2, size=17))


def test_line_and_as_dict():
    s = ReconstructionScores(n=2000, psnr=27.6104, ssim=0.90812, rfid=12.3,
                             encode_img_s=812.0, decode_img_s=640.5)
    assert s.line() == "PSNR 27.61 dB, SSIM 0.908, rFID 12.30 (n=2000)"
    assert s.as_dict() == {"n": 2000, "psnr": 27.6104, "ssim": 0.90812, "rfid": 12.3,
                           "encode_img_s": 812.0, "decode_img_s": 640.5}
    s.rfid = None
    assert s.line() == "PSNR 27.61 dB, SSIM 0.908 (n=2000)"


def test_card_section_holds_the_numbers_and_the_split():
    s = ReconstructionScores(n=2000, psnr=27.6104, ssim=0.90812, rfid=12.345,
                             encode_img_s=812.0, decode_img_s=640.5)
    md = card_section(s, split="held-out 10% (seed 0)", source="ffhq|64")
    assert md.startswith("## Reconstruction quality\n")
    for text in ["27.61 dB", "0.908", "12.35", "2000", "held-out 10% (seed 0)",
                 "812.0 img/s", "640.5 img/s", "ffhq\\|64"]:
        assert text in md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert all(ln.count(" | ") == 1 for ln in table[2:])  # two cells a row, pipe escaped
    s.rfid = None
    assert "| rFID | not measured |" in card_section(s, split="val", source="faces")
