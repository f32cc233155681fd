from __future__ import annotations

import pytest
import torch

from facediff.config import DiffusionConfig
from facediff.diffusion.objectives import DiffusionObjective


def test_every_timestep_including_the_last_is_trained():
    obj = DiffusionObjective(DiffusionConfig(num_train_timesteps=50))
    t = obj.sample_timesteps(20_000, torch.Generator().manual_seed(0))
    assert t.min().item() == 0 and t.max().item() == 49
    assert len(torch.unique(t)) == 50


def test_targets_match_the_definitions():
    obj = DiffusionObjective(DiffusionConfig(prediction="v"))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ab = obj.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    torch.testing.assert_close(obj.target(x0, eps, t), v)
    obj.cfg.prediction = "eps"
    assert torch.equal(obj.target(x0, eps, t), eps)
    obj.cfg.prediction = "x0"
    assert torch.equal(obj.target(x0, eps, t), x0)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_weights(prediction: str):
    cfg = DiffusionConfig(prediction=prediction, loss_weighting="min_snr", snr_gamma=5.0)
    obj = DiffusionObjective(cfg)
    t = torch.arange(0, 1000, 7)
    ab = obj.scheduler.alphas_cumprod[t].double()
    snr = ab / (1 - ab)
    expected = {"eps": snr.clamp(max=5) / snr, "v": snr.clamp(max=5) / (snr + 1),
                "x0": snr.clamp(max=5)}[prediction]
    torch.testing.assert_close(obj.weights(t).double(), expected, rtol=1e-4, atol=1e-6)
    obj.cfg.loss_weighting = "none"
    assert torch.equal(obj.weights(t), torch.ones(len(t)))


def test_loss_is_zero_for_a_perfect_predictor():
    obj = DiffusionObjective(DiffusionConfig(prediction="eps"))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)

    class Oracle(torch.nn.Module):
        def forward(self, x, t):
            return type("Out", (), {"sample": eps})()

    loss = obj.loss(Oracle(), x0, eps, torch.tensor([1, 400, 999]))
    assert loss.shape == (3,) and torch.all(loss == 0)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("rescale", [False, True])
def test_the_pure_noise_end_keeps_its_weight(prediction: str, rescale: bool):
    """At t = T-1 (SNR ~ 0, or exactly 0 with zero terminal SNR) eps keeps weight 1, and no
    prediction type lets the weight collapse to 0 where SNR is exactly 0."""
    obj = DiffusionObjective(DiffusionConfig(prediction=prediction, rescale_zero_snr=rescale,
                                             loss_weighting="min_snr"))
    w = obj.weights(torch.tensor([999]))
    if prediction == "eps" or rescale:
        assert w.item() == pytest.approx(1.0)
    assert torch.isfinite(w).all() and w.item() >= 0
