from __future__ import annotations

import pytest
import torch

from facediff.diffusion.samplers import SAMPLERS, SamplingSettings
from facediff.diffusion.sampling import generate, make_scheduler
from facediff.errors import FacediffError
from facediff.model import build_net
from tests.conftest import tiny_config


def _settings(cfg, sampler=None, steps=None, **fields) -> SamplingSettings:
    return SamplingSettings(sampler=sampler, steps=steps, **fields).resolve(cfg.sample)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_net(tiny_config()).eval()


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_gives_finite_images(net, sampler: str, prediction: str):
    cfg = tiny_config(None, f"diffusion.prediction={prediction}")
    states = []
    imgs = generate(net, cfg.diffusion, 3, _settings(cfg, sampler, steps=3, batch_size=3),
                    callback=lambda i, n, t, x, x0: states.append(x))
    assert torch.isfinite(states[-1]).all()
    assert imgs.shape == (3, 16, 16, 3) and imgs.dtype == torch.uint8
    assert imgs.float().std() > 0  # not a constant image


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_first_step_is_the_last_trained_timestep(sampler: str):
    cfg = tiny_config()
    for steps in (1, 7, 25):
        sched = make_scheduler(sampler, cfg.diffusion, steps)
        assert round(float(sched.timesteps[0])) == cfg.diffusion.num_train_timesteps - 1


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp", "ddim"])
def test_same_seed_same_images_at_any_batch_size(net, sampler: str):
    cfg = tiny_config()
    a = generate(net, cfg.diffusion, 5, _settings(cfg, sampler, 4, seed=7, batch_size=5, eta=1))
    b = generate(net, cfg.diffusion, 5, _settings(cfg, sampler, 4, seed=7, batch_size=2, eta=1))
    assert (a.int() - b.int()).abs().max() <= 1  # equal up to float rounding of one level
    c = generate(net, cfg.diffusion, 5, _settings(cfg, sampler, 4, seed=8, batch_size=5, eta=1))
    assert (a.int() - c.int()).abs().float().mean() > 5


def test_step_counts_are_validated(net):
    cfg = tiny_config()
    with pytest.raises(FacediffError, match="unknown sampler"):
        make_scheduler("plms", cfg.diffusion, 10)
    with pytest.raises(FacediffError, match="at most"):
        make_scheduler("ddim", cfg.diffusion, 5000)
    with pytest.raises(FacediffError, match="at least 1"):
        generate(net, cfg.diffusion, 0, _settings(cfg))


def test_callback_sees_every_step_and_no_state_is_kept(net):
    cfg = tiny_config()
    seen = []
    generate(net, cfg.diffusion, 2, _settings(cfg, "heun", steps=3),
             callback=lambda i, n, t, x, x0: seen.append((i, n)))
    assert [i for i, _ in seen] == list(range(len(seen)))
    assert seen[0][1] == len(seen) == 5  # heun: 2 evaluations per step, one at the end


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_callback_x0_is_the_estimate_ddim_steps_to(net, prediction: str):
    """DDIM's last step (to alpha_bar = 1) lands exactly on the network's x_0 estimate, so
    the callback's x0 at that step must equal the returned image."""
    cfg = tiny_config(None, f"diffusion.prediction={prediction}")
    seen = []
    from facediff.diffusion.sampling import (
        generators_for,
        guided_denoiser,
        initial_noise,
        sample_loop,
    )

    gens = generators_for(3, 0, 2)
    x = initial_noise(gens, (3, 16, 16), torch.device("cpu"))
    sched = make_scheduler("ddim", cfg.diffusion, 4)
    with torch.no_grad():
        out = sample_loop(guided_denoiser(net, None), sched, x, gens,
                          callback=lambda i, n, t, xt, x0: seen.append((xt, x0)))
    assert len(seen) == 4
    assert torch.allclose(seen[-1][1].clamp(-1, 1), out, atol=1e-4)
    assert torch.allclose(seen[0][0], x, atol=1e-5)  # the first state is the initial noise
