"""Warm starts (`train.init` / `facediff train --init`): a new run that begins at a model's
weights, so training survives the loss of its run dir as long as an export was kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facediff.cli import main
from facediff.config import Config
from facediff.errors import ConfigError
from facediff.model.autoencoder import weights_digest
from facediff.train import checkpoint as ck
from facediff.train.trainer import Trainer, train
from tests.conftest import assert_one_line_exit_2, plain_faces, tiny_args, tiny_config


@pytest.fixture(scope="module")
def first(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step run of 8 images a step: its export has seen 32 images."""
    run = tmp_path_factory.mktemp("init") / "first"
    train(tiny_config(faces_dir, "train.max_steps=4"), run, progress=False)
    return run


def _export(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / ck.EXPORT_DIR / "weights.safetensors"))


def test_a_warm_start_begins_at_the_models_weights_and_counts_its_images(
        faces_dir: Path, first: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir, "train.max_steps=2", f"train.init={first / ck.EXPORT_DIR}")
    trainer = Trainer(cfg, tmp_path / "b", progress=False)
    trainer._resume_latest()  # no checkpoint: the warm start
    a = _export(first)
    for net in (trainer.net, trainer.ema_net):
        state = net.state_dict()
        assert state.keys() == a.keys()
        for k in a:
            assert torch.equal(state[k], a[k]), k
    assert trainer.step == 0
    assert trainer.fit().step == 2
    saved = Config.load(tmp_path / "b" / "config.yaml")
    assert saved.train.init_images == 4 * 8
    assert saved.train.init_digest == weights_digest(a)  # (a pixel model: all its weights)
    # the EMA's ramp-up goes on from the images seen before: 4 earlier steps + 2 here
    state = torch.load(ck.latest_checkpoint(tmp_path / "b") / "state.pt", weights_only=False)
    assert state["ema_optimization_step"] == 6

    # a chain of pieces adds up: the third run starts where the second ended
    third = tiny_config(faces_dir, "train.max_steps=1", f"train.init={tmp_path / 'b'}")
    train(third, tmp_path / "c", progress=False)
    assert Config.load(tmp_path / "c" / "config.yaml").train.init_images == 4 * 8 + 2 * 8


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float((a[k].float() - b[k].float()).norm()) for k in a)


def test_a_warm_start_trains_on_from_the_model(faces_dir: Path, first: Path, tmp_path: Path):
    warm = tiny_config(faces_dir, "train.max_steps=2", f"train.init={first}")
    train(warm, tmp_path / "warm", progress=False)
    cold = tiny_config(faces_dir, "train.max_steps=2", "train.seed=1")  # its own start
    train(cold, tmp_path / "cold", progress=False)
    a = _export(first)
    moved = _distance(_export(tmp_path / "warm"), a)
    assert 0 < moved < _distance(_export(tmp_path / "cold"), a) / 10


def test_a_warm_start_draws_on_from_where_its_weights_stopped(faces_dir: Path, first: Path,
                                                              tmp_path: Path):
    # not the first piece's batches, noise and timesteps again: 4 steps seen, so 4 and 5
    drawn: list[int] = []

    class Recording(Trainer):
        def draw_batch(self, step: int):
            drawn.append(step)
            return super().draw_batch(step)

    cfg = tiny_config(faces_dir, "train.max_steps=2", f"train.init={first}")
    Recording(cfg, tmp_path, progress=False).fit()
    assert drawn == [4, 5]


def test_a_different_network_is_refused_in_one_line(faces_dir: Path, first: Path,
                                                     tmp_path: Path):
    wider = tiny_config(faces_dir, "train.max_steps=2", "model.block_out_channels=[16,48]",
                        f"train.init={first}")
    with pytest.raises(ConfigError) as e:
        Trainer(wider, tmp_path, progress=False).fit()
    assert "model.block_out_channels: [16, 32] vs [16, 48]" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert not ck.list_checkpoints(tmp_path)


def test_a_resumed_run_keeps_its_checkpoint_and_its_record(faces_dir: Path, first: Path,
                                                           tmp_path: Path):
    cfg = tiny_config(faces_dir, "train.max_steps=4", f"train.init={first}")
    train(cfg, tmp_path, progress=False, until_step=2)
    mid = load_file(str(ck.latest_checkpoint(tmp_path) / "model.safetensors"))
    fresh = tiny_config(faces_dir, "train.max_steps=4")  # the API with a new config object
    trainer = Trainer(fresh, tmp_path, progress=False)
    trainer._resume_latest()
    assert trainer.step == 2
    for k, v in trainer.net.state_dict().items():
        assert torch.equal(v, mid[k]), k
    assert (fresh.train.init, fresh.train.init_images) == (str(first), 32)


def test_cli_init_takes_the_models_config_and_the_new_data(faces_dir: Path, first: Path,
                                                          tmp_path: Path):
    other = plain_faces(tmp_path / "other", n=12)
    run = tmp_path / "run"
    assert main(["train", "--init", str(first), "--data", str(other), "--out", str(run),
                 "--max-steps", "1", "--no-progress"]) == 0
    saved = Config.load(run / "config.yaml")
    assert saved.model == Config.load(first / "config.yaml").model
    assert saved.data.path == str(other.resolve())
    assert saved.train.init == str(first.resolve()) and saved.train.init_images == 32


def test_a_distillation_of_a_warm_started_model_starts_from_its_teacher(first: Path,
                                                                          tmp_path: Path):
    from facediff.train.distill import distill_config

    teacher = Config.load(first / "config.yaml")
    teacher.train.init, teacher.train.init_images = "/elsewhere/model", 320
    made = distill_config(teacher, digest="0" * 64, steps=2, steps_per_round=5)
    assert (made.train.init, made.train.init_digest, made.train.init_images) == (None, None, 0)


def test_cli_init_of_a_missing_model_is_one_line(faces_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]):
    assert_one_line_exit_2(["train", "--init", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "r"), *tiny_args(faces_dir), "--max-steps", "1"],
                           capsys, "model not found")
