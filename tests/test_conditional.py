"""Conditional models: condition embedding, dropout, guidance and attribute requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facediff
from facediff.config import Condition
from facediff.data.conditions import ConditionSpec, parse_requests, spec_from_conditions
from facediff.diffusion.sampling import guided_denoiser
from facediff.errors import DataError
from facediff.model import build_net
from facediff.train.trainer import Trainer
from tests.conftest import tiny_config

CONDS = [Condition("Smiling", "binary", ["0", "1"]),
         Condition("hair", "categorical", ["blond", "dark", "red"])]


def write_labelled(root: Path, n: int = 16) -> tuple[Path, Path]:
    """``n`` 16 px images whose colour is a hair value and whose white bar is a smile."""
    d = root / "faces"
    d.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        smiling, hair = i % 2, ["blond", "dark", "red"][i % 3]
        color = {"blond": (230, 200, 80), "dark": (30, 20, 10), "red": (200, 40, 20)}[hair]
        arr = np.full((16, 16, 3), color, np.uint8)
        arr[10:13, 4:12] = 255 * smiling  # a white "smile" bar
        arr += rng.integers(0, 8, arr.shape, dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{i}.png")
        rows.append(f"{i}.png,{smiling},{hair}")
    labels = root / "labels.csv"
    labels.write_text("file,Smiling,hair\n" + "\n".join(rows) + "\n")
    return d, labels


@pytest.fixture()
def labelled(tmp_path: Path) -> tuple[Path, Path]:
    return write_labelled(tmp_path)


def _net():
    cfg = tiny_config()
    cfg.conditions = list(CONDS)
    torch.manual_seed(0)
    return build_net(cfg).eval(), cfg


def test_embedding_one_hot_has_an_unspecified_slot_per_condition():
    net, _ = _net()
    oh = net.cond.one_hot(torch.tensor([[1, 2], [-1, 0], [-1, -1]]))
    assert oh.shape == (3, 2 + 1 + 3 + 1)
    assert oh.tolist()[0] == [0, 1, 0, 0, 0, 1, 0]
    assert oh.tolist()[1] == [0, 0, 1, 1, 0, 0, 0]
    assert oh.tolist()[2] == [0, 0, 1, 0, 0, 0, 1]  # fully unconditional


def test_guidance_zero_is_unconditional_and_one_is_conditional():
    net, _ = _net()
    with torch.no_grad():
        for p in net.cond.parameters():
            p.normal_(std=1.0)  # make conditions matter
    x, t = torch.randn(2, 3, 16, 16), torch.tensor(500)
    cond = net.cond.one_hot(torch.tensor([[1, 0], [0, 2]]))
    uncond = net.cond.one_hot(net.unconditional_labels(2))
    with torch.no_grad():
        c = net(x, t, soft=cond).sample
        u = net(x, t, soft=uncond).sample
        assert not torch.allclose(c, u)
        torch.testing.assert_close(guided_denoiser(net, cond, 0.0)(x, t), u)
        torch.testing.assert_close(guided_denoiser(net, cond, 1.0)(x, t), c)
        # the batched pass gives the same halves as separate passes
        torch.testing.assert_close(guided_denoiser(net, cond, 3.0)(x, t), u + 3 * (c - u),
                                   rtol=1e-4, atol=1e-4)
        g = guided_denoiser(net, cond, 3.0, guidance_rescale=1.0)(x, t)
        torch.testing.assert_close(g.std(dim=(1, 2, 3)), c.std(dim=(1, 2, 3)), rtol=1e-4,
                                   atol=1e-5)


def test_attribute_requests_and_their_errors():
    spec = spec_from_conditions(CONDS)
    assert parse_requests(spec, ["Smiling=1", "hair=red"]) == [1, 2]
    assert parse_requests(spec, ["smiling=yes"]) == [1, -1]
    assert parse_requests(spec, ["hair=any"]) == [-1, -1]
    with pytest.raises(DataError, match=r"did you mean 'Smiling'.*valid: Smiling, hair"):
        parse_requests(spec, ["Smilng=1"])
    with pytest.raises(DataError, match="valid: blond, dark, red"):
        parse_requests(spec, ["hair=green"])
    with pytest.raises(DataError, match="NAME=VALUE"):
        parse_requests(spec, ["Smiling"])
    with pytest.raises(DataError, match="unconditional"):
        parse_requests(ConditionSpec(), ["Smiling=1"])


@pytest.mark.parametrize("cond_drop, attr_drop", [(0.5, 0.0), (0.0, 0.5), (0.0, 0.0)])
def test_dropout_paths(labelled, tmp_path: Path, cond_drop: float, attr_drop: float):
    d, labels = labelled
    cfg = tiny_config(d, f"data.labels={labels}", "train.max_steps=1",
                      f"train.cond_drop={cond_drop}", f"train.attr_drop={attr_drop}",
                      "train.batch_size=16")
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    real = tr.objective.loss

    def spy(net, x0, noise, t, *, labels=None):
        seen.append(labels.clone())
        return real(net, x0, noise, t, labels=labels)

    tr.objective.loss = spy
    tr.train_step()
    (lab,) = seen
    full_rows = (lab == -1).all(dim=1)
    some = (lab == -1).any(dim=1)
    if cond_drop:
        assert full_rows.any() and (~full_rows).any()
    if attr_drop:
        assert (some & ~full_rows).any()  # single attributes dropped, others kept
    if not cond_drop and not attr_drop:
        assert not some.any()


def test_conditional_training_learns_the_condition(labelled, tmp_path: Path):
    d, labels = labelled
    cfg = tiny_config(d, f"data.labels={labels}", "train.max_steps=150", "train.lr=0.003",
                      "train.batch_size=16", "train.ema_halflife_images=500")
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    model = facediff.load(tmp_path / "run", device="cpu")
    assert [c.name for c in model.spec.conditions] == ["Smiling", "hair"]
    red = model.sample_tensor(4, steps=10, attrs={"hair": "red"}, guidance=2.0).float()
    dark = model.sample_tensor(4, steps=10, attrs={"hair": "dark"}, guidance=2.0).float()
    # red hair images are much redder than dark ones, from the same seeds
    assert (red[..., 0].mean() - dark[..., 0].mean()) > 40
