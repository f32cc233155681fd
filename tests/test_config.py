from __future__ import annotations

from pathlib import Path

import pytest

from facediff.config import Config, load_preset, preset_names
from facediff.configure import resolve_config
from facediff.errors import ConfigError
from facediff.train.checkpoint import save_config


def test_presets_exist_and_validate():
    names = preset_names()
    for expected in ("simpsons64", "anime128", "fairface128", "celeba64", "mnist32", "tiny"):
        assert expected in names
    for name in names:
        cfg = resolve_config(preset=name)
        assert cfg.preset == name
    assert load_preset("mnist32").data.channels == 1
    assert load_preset("anime128").data.image_size == 128


def test_yaml_roundtrip_is_exact(tmp_path: Path):
    cfg = resolve_config(preset="simpsons64", overrides=["train.lr=3e-4", "data.path=/x"])
    save_config(tmp_path / "c.yaml", cfg)
    again = Config.load(tmp_path / "c.yaml")
    assert again == cfg
    assert again.train.lr == pytest.approx(3e-4)


def test_overrides_are_typed():
    cfg = resolve_config(overrides=[
        "train.lr=2e-4", "train.batch_size=16", "model.block_out_channels=[32, 64]",
        "data.hflip=false", "diffusion.prediction=eps", "model.attention_levels=[1]",
        "data.image_size=32",
    ])
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 16
    assert cfg.model.block_out_channels == [32, 64]
    assert cfg.data.hflip is False
    assert cfg.diffusion.prediction == "eps"
    cfg.override("train.lr=1")  # an int is accepted for a float field
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("bad, fragment", [
    ("train.foo=1", "valid: batch_size"),
    ("nope.lr=1", "valid: data, model, diffusion, train, sample"),
    ("train.batch_size=abc", r"expected int"),
    ("train.batch_size=1.5", "expected int"),
    ("diffusion.prediction=eps2", "choose from eps, v, x0"),
    ("data.hflip=maybe", "expected bool"),
    ("train=1", "is a section"),
    ("trainlr", "section.key=value"),
])
def test_bad_overrides_are_rejected(bad: str, fragment: str):
    with pytest.raises(ConfigError, match=fragment):
        resolve_config(overrides=[bad])


def test_unknown_key_in_file_lists_valid_keys(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.lrr.*valid: batch_size"):
        Config.load(f)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match=r"available: .*tiny"):
        load_preset("simpsons65")


@pytest.mark.parametrize("bad, fragment", [
    ("data.image_size=30", "divisible by 8"),
    ("model.norm_num_groups=7", "not divisible"),
    ("model.attention_levels=[9]", "out of range"),
    ("train.batch_size=0", "at least 1"),
    ("data.val_fraction=1.0", "val_fraction"),
    ("diffusion.beta_schedule=sigmoid", "cannot use this model's schedule"),
    ("sample.sampler=plms", "unknown sampler"),
    ("sample.steps=5000", "at most"),
    ("train.adam_betas=[0.9, 1.5]", "adam_betas"),
    ("train.warmup_steps=-1", "warmup_steps"),
])
def test_validation(bad: str, fragment: str):
    with pytest.raises(ConfigError, match=fragment):
        resolve_config(preset="simpsons64", overrides=[bad])


def test_binary_config_file_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not text"):
        Config.load(f)


def test_a_bare_no_is_the_word_not_false(tmp_path):
    """YAML 1.1 reads `no` as false; for a choice that includes "no" it means "no"."""
    from facediff.configure import resolve_config

    cfg = resolve_config(preset="tiny", overrides=["train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  mixed_precision: no\n")
    assert resolve_config(config_file=str(f)).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="mixed_precision"):
        resolve_config(preset="tiny", overrides=["train.mixed_precision=yes"])
