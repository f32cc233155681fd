from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facediff.data.transforms import uint8_to_model
from facediff.train import checkpoint as ck
from facediff.train.trainer import BatchStream, Trainer, train
from tests.conftest import tiny_config


def _fixed_loss(trainer: Trainer) -> float:
    g = torch.Generator().manual_seed(0)
    x0 = uint8_to_model(trainer.train_images[:8])
    noise = torch.randn(x0.shape, generator=g)
    t = torch.linspace(50, 950, 8).long()
    with torch.no_grad():
        return float(trainer.objective.loss(trainer.net, x0, noise, t).mean())


def test_loss_falls_when_overfitting(faces_dir: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir, "train.max_steps=80", "train.lr=0.003")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    before = _fixed_loss(trainer)
    result = trainer.fit()
    after = _fixed_loss(trainer)
    assert result.reason == "finished" and result.step == 80
    assert after < 0.6 * before, (before, after)
    rows = list(csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")))
    assert len(rows) == 40 and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert all(float(r["img_per_s"]) > 0 and r["lr"] and r["grad_norm"] for r in rows)
    assert (tmp_path / "run/samples/step-0000080.png").is_file()
    # TensorBoard holds the curves, the sample grid and the config
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run/logs")).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/img_per_s"} <= \
        set(tags["scalars"])
    assert len(events.Scalars("train/loss")) == 40
    assert tags["images"] == ["samples"]
    assert "config/text_summary" in tags["tensors"]
    assert ck.is_exported_model(tmp_path / "run" / "model")


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    c = ck.latest_checkpoint(run)
    out = {f"model.{k}": v for k, v in load_file(str(c / "model.safetensors")).items()}
    out.update({f"ema.{k}": v for k, v in load_file(str(c / "ema.safetensors")).items()})
    state = torch.load(c / "state.pt", weights_only=True)
    for pid, s in state["optimizer"]["state"].items():
        out[f"opt.{pid}.exp_avg"] = s["exp_avg"]
        out[f"opt.{pid}.exp_avg_sq"] = s["exp_avg_sq"]
    return out


@pytest.mark.parametrize("extra", [[], ["train.grad_accum=2", "data.val_fraction=0.25",
                                        "train.val_every=3", "model.dropout=0.1"]])
def test_resume_is_exact(faces_dir: Path, tmp_path: Path, extra: list[str]):
    # 8 images per step over 18 (or 24) images: the pause falls mid-epoch
    cfg = tiny_config(faces_dir, "train.max_steps=10", "train.checkpoint_every=4", *extra)
    straight = train(cfg, tmp_path / "a", progress=False)
    paused = train(cfg, tmp_path / "b", progress=False, until_step=5)
    assert paused.reason == "paused" and paused.step == 5
    assert ck.latest_checkpoint(tmp_path / "b").name == "step-0000005"
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert straight.step == resumed.step == 10
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = list(csv.DictReader(open(tmp_path / "b" / "logs" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == sorted({int(r["step"]) for r in rows})


def test_sigint_writes_a_checkpoint_and_resume_finishes(faces_dir: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir, "train.max_steps=12")

    class Interrupted(Trainer):
        def train_step(self):
            out = super().train_step()
            if self.step == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return out

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in the background
    result = Interrupted(cfg, tmp_path, progress=False).fit()
    assert result.reason == "interrupted" and result.step == 3
    assert ck.latest_checkpoint(tmp_path).name == "step-0000003"
    assert signal.getsignal(signal.SIGINT) is before  # restored
    again = train(cfg, tmp_path, progress=False)
    assert again.reason == "finished" and again.step == 12


def test_time_limit_checkpoints_exports_and_resumes(faces_dir: Path, tmp_path: Path,
                                                     monkeypatch):
    import time as real_time

    from facediff.train import trainer as trainer_mod

    clock = {"now": 1000.0}

    class FakeTime:  # only the deadline's clock is faked; each step "takes" 30 s
        def __getattr__(self, name: str):
            return getattr(real_time, name)

        def monotonic(self) -> float:
            return clock["now"]

    class Slow(Trainer):
        def train_step(self):
            out = super().train_step()
            clock["now"] += 30
            return out

    monkeypatch.setattr(trainer_mod, "time", FakeTime())
    cfg = tiny_config(faces_dir, "train.max_steps=12")
    result = Slow(cfg, tmp_path, progress=False).fit(time_limit_min=2)
    assert result.reason == "time_limit" and result.step == 4
    assert ck.latest_checkpoint(tmp_path).name == "step-0000004"
    assert ck.is_exported_model(tmp_path / "model")
    again = Slow(cfg, tmp_path, progress=False).fit(time_limit_min=60)
    assert again.reason == "finished" and again.step == 12


def test_early_stopping_on_held_out_loss(faces_dir: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir, "train.max_steps=50", "data.val_fraction=0.25",
                      "train.val_every=2", "train.early_stop_patience=2",
                      "train.early_stop_min_delta=100.0")
    result = train(cfg, tmp_path, progress=False)
    assert result.reason == "early_stopped"
    assert result.step == 6  # best at step 2, no gain at 4 and 6
    assert ck.latest_checkpoint(tmp_path).name == "step-0000006"
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    assert sum(1 for r in rows if r["val_loss"]) == 3
    # the best EMA (step 2) is exported apart from the last one
    assert ck.is_exported_model(tmp_path / "best")
    assert ck.read_model(tmp_path / "best")[1].keys() == ck.read_model(tmp_path)[1].keys()


def test_batch_stream_covers_each_epoch_once_and_is_stateless():
    s = BatchStream(n=10, batch_size=4, seed=3)
    first = [s.batch(k) for k in range(5)]  # 20 indices = 2 epochs
    flat = torch.tensor([int(i) for b in first for i in b])
    assert sorted(flat[:10].tolist()) == list(range(10))
    assert sorted(flat[10:20].tolist()) == list(range(10))
    fresh = BatchStream(n=10, batch_size=4, seed=3)
    assert all((fresh.batch(k) == first[k]).all() for k in (3, 1, 4))


def test_batch_must_split_over_accumulation(faces_dir: Path, tmp_path: Path):
    from facediff.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        Trainer(tiny_config(faces_dir, "train.grad_accum=3"), tmp_path, progress=False)


def test_resume_refuses_a_different_network_and_applies_a_new_lr(faces_dir: Path,
                                                                  tmp_path: Path):
    from facediff.errors import ConfigError

    cfg = tiny_config(faces_dir, "train.max_steps=4", "train.warmup_steps=0",
                      "train.lr_schedule=constant")
    train(cfg, tmp_path, progress=False, until_step=2)
    wider = tiny_config(faces_dir, "train.max_steps=4", "model.block_out_channels=[16,48]")
    with pytest.raises(ConfigError, match="different model"):
        Trainer(wider, tmp_path, progress=False).fit()
    eps = tiny_config(faces_dir, "train.max_steps=4", "diffusion.prediction=eps")
    with pytest.raises(ConfigError, match="different diffusion"):
        Trainer(eps, tmp_path, progress=False).fit()
    slower = tiny_config(faces_dir, "train.max_steps=4", "train.warmup_steps=0",
                         "train.lr_schedule=constant", "train.lr=1e-5")
    trainer = Trainer(slower, tmp_path, progress=False)
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_grad_clip_zero_means_no_clipping(faces_dir: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir, "train.max_steps=2", "train.grad_clip=0")
    trainer = Trainer(cfg, tmp_path, progress=False)
    before = [p.detach().clone() for p in trainer.net.parameters()]
    trainer.fit()
    moved = sum(float((p.detach() - b).abs().sum())
                for p, b in zip(trainer.net.parameters(), before, strict=True))
    assert moved > 0


def test_resume_refuses_changed_condition_values(tmp_path: Path):
    from facediff.errors import ConfigError
    from tests.conftest import plain_faces

    d = plain_faces(tmp_path / "faces")
    labels = tmp_path / "l.csv"
    labels.write_text("file,race\n" + "".join(f"{i}.png,{'AB'[i % 2]}\n" for i in range(8)))
    cfg = tiny_config(d, "train.max_steps=2", f"data.labels={labels}")
    train(cfg, tmp_path / "run", progress=False, until_step=1)
    labels.write_text("file,race\n" + "".join(f"{i}.png,{'AC'[i % 2]}\n" for i in range(8)))
    with pytest.raises(ConfigError, match="different conditions"):
        Trainer(cfg, tmp_path / "run", progress=False).fit()


def test_cpu_precision_default(monkeypatch):
    import facediff.train.trainer as tr_mod

    monkeypatch.setattr(tr_mod.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tr_mod, "cpu_has_bf16", lambda: True)
    assert tr_mod.resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(tr_mod, "cpu_has_bf16", lambda: False)
    assert tr_mod.resolve_mixed_precision("auto") == "no"
    assert tr_mod.resolve_mixed_precision("fp16") == "fp16"


def test_cpu_layout_and_optimizer(faces_dir: Path, tmp_path: Path):
    # (accelerate's state is per process: every in-process trainer keeps the same precision)
    trainer = Trainer(tiny_config(faces_dir, "train.max_steps=2", "train.channels_last=true"),
                      tmp_path / "run", progress=False)
    convs = [m.weight for m in trainer.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert trainer.optimizer.defaults["foreach"] is True  # multi-tensor AdamW off CUDA
    assert trainer.fit().reason == "finished"
    plain = Trainer(tiny_config(faces_dir), tmp_path / "p", progress=False)  # auto: off on CPU
    assert not all(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in plain.net.modules() if isinstance(m, torch.nn.Conv2d)
                   and m.weight.shape[-1] > 1)
