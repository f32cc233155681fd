"""The attention kernel: the plain matmul-softmax kernel on CPUs for training (faster there
than the CPU flash kernel behind SDPA), the same maths as SDPA, chosen by train.attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from facediff.errors import ConfigError
from facediff.model import build_net
from facediff.model.unet import resolve_attention, set_attention
from facediff.train.trainer import Trainer
from tests.conftest import tiny_config


def processors(net: torch.nn.Module) -> set[type]:
    return {type(m.processor) for m in net.modules() if isinstance(m, Attention)}


def test_auto_is_math_on_cpu_and_sdpa_elsewhere():
    assert resolve_attention("auto", torch.device("cpu")) == "math"
    assert resolve_attention("auto", torch.device("cuda")) == "sdpa"
    assert resolve_attention("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="attention kernel must be one of"):
        resolve_attention("flash", torch.device("cpu"))


def test_both_kernels_compute_the_same_output_and_gradients():
    cfg = tiny_config(None, "model.attention_levels=[1]")
    torch.manual_seed(0)
    net = build_net(cfg).unet
    x = torch.randn(3, 3, cfg.data.image_size, cfg.data.image_size)
    t = torch.tensor([10, 500, 990])
    results = []
    for kernel, cls in (("sdpa", AttnProcessor2_0), ("math", AttnProcessor)):
        assert set_attention(net, kernel, torch.device("cpu")) == kernel
        assert processors(net) == {cls}
        net.zero_grad()
        out = net(x, t).sample
        out.square().mean().backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        results.append((out.detach(), grads))
    (o1, g1), (o2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-5), (o1 - o2).abs().max()
    assert torch.allclose(g1, g2, atol=1e-5, rtol=1e-4), (g1 - g2).abs().max()


def test_trainer_uses_the_configured_kernel(faces_dir: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir)
    tr = Trainer(cfg, tmp_path / "auto", progress=False)
    assert processors(tr.net) == {AttnProcessor}  # auto on this CPU
    cfg = tiny_config(faces_dir, "train.attention=sdpa")
    tr = Trainer(cfg, tmp_path / "sdpa", progress=False)
    assert processors(tr.net) == {AttnProcessor2_0}
    with pytest.raises(ConfigError, match=r"train\.attention"):
        tiny_config(faces_dir, "train.attention=flash")
