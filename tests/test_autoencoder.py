"""The first-stage autoencoder's networks and losses (facediff.model.autoencoder)."""

from __future__ import annotations

import pytest
import torch

from facediff.model.autoencoder import (
    PatchDiscriminator,
    build_autoencoder,
    discriminator_hinge_loss,
    generator_adversarial_loss,
    reconstruction_loss,
)


@pytest.mark.parametrize("kind", ["tiny", "kl"])
def test_shapes_and_factor(kind: str):
    torch.manual_seed(0)
    ae = build_autoencoder(kind, 3, block_out_channels=(16, 16, 16), blocks_per_level=1)
    assert ae.factor == 4 and ae.latent_channels == 4 and ae.kind == kind
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z, kl = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 4, 4) and torch.isfinite(z).all()
    assert (float(kl.detach()) > 0) == (kind == "kl")
    assert ae.decode(z).shape == x.shape


def test_the_kl_posterior_sample_is_seeded():
    torch.manual_seed(0)
    ae = build_autoencoder("kl", 3, block_out_channels=(16, 16), blocks_per_level=1)
    x = torch.zeros(1, 3, 8, 8)
    a, _ = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    b, _ = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    mean, _ = ae.encode(x)
    assert torch.equal(a, b) and not torch.equal(a, mean)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="tiny or kl"):
        build_autoencoder("vq")  # type: ignore[arg-type]


def test_reconstruction_loss_is_zero_only_for_a_perfect_copy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    assert float(reconstruction_loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    l1_only = float(reconstruction_loss(x, noisy, ssim_weight=0))
    assert l1_only == pytest.approx(float((noisy - x).abs().mean()))
    assert float(reconstruction_loss(x, noisy)) > l1_only  # SSIM adds its term


def test_hinge_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert float(discriminator_hinge_loss(real, fake)) == pytest.approx(0.75)
    assert float(generator_adversarial_loss(fake)) == pytest.approx(1.0)


def test_the_patch_discriminator_gives_one_logit_per_patch():
    d = PatchDiscriminator(3, width=8, layers=3)
    assert d(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 4, 4)


def test_a_few_steps_reduce_the_reconstruction_loss():
    torch.manual_seed(0)
    ae = build_autoencoder("tiny", 3, block_out_channels=(16, 16, 16), blocks_per_level=1)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = reconstruction_loss(x, ae.decode(ae.encode(x)[0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]
