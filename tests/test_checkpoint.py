from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facediff.errors import ModelNotFoundError
from facediff.train import checkpoint as ck
from tests.conftest import tiny_config


def _save(run: Path, step: int, keep: int = 3) -> Path:
    w = {"w": torch.full((2,), float(step))}
    return ck.save_checkpoint(run, step, tiny_config(), model_state=w, ema_state=w,
                              train_state={"step": step}, keep=keep)


def test_keeps_the_last_k(tmp_path: Path):
    for s in (10, 20, 30, 40):
        _save(tmp_path, s, keep=2)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [30, 40]
    loaded = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    assert loaded["state"]["step"] == 40 and loaded["ema"]["w"][0] == 40


def test_a_crash_mid_write_never_replaces_the_latest_good_checkpoint(tmp_path: Path):
    _save(tmp_path, 10)
    # a later write that died half-way: temp folder with a partial file, and a final-named
    # folder missing files (e.g. copied by hand)
    tmp = tmp_path / "checkpoints" / ".tmp-step-0000020-999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    partial = tmp_path / "checkpoints" / "step-0000030"
    partial.mkdir()
    (partial / "config.yaml").write_text("x")
    assert ck.latest_checkpoint(tmp_path).name == "step-0000010"
    _save(tmp_path, 40)  # the next good save removes stale temp folders
    assert not tmp.exists()
    assert ck.latest_checkpoint(tmp_path).name == "step-0000040"


def test_failed_save_keeps_previous(tmp_path: Path, monkeypatch):
    _save(tmp_path, 10)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(OSError):
        _save(tmp_path, 20)
    assert ck.latest_checkpoint(tmp_path).name == "step-0000010"
    assert ck.load_checkpoint(ck.latest_checkpoint(tmp_path))["state"]["step"] == 10


def test_read_model_prefers_the_newest_weights(tmp_path: Path):
    cfg = tiny_config()
    _save(tmp_path, 10)
    _, w, src = ck.read_model(tmp_path)
    assert w["w"][0] == 10 and "step-0000010" in src
    ck.export_model(tmp_path / "model", cfg, {"w": torch.full((2,), 15.0)}, step=15)
    _, w, src = ck.read_model(tmp_path)
    assert w["w"][0] == 15 and src.endswith("model")
    _save(tmp_path, 20)  # training went on after the export
    _, w, _ = ck.read_model(tmp_path)
    assert w["w"][0] == 20
    _, w, _ = ck.read_model(tmp_path / "model")  # an export dir directly
    assert w["w"][0] == 15


def test_half_precision_export(tmp_path: Path):
    ck.export_model(tmp_path / "m", tiny_config(), {"w": torch.ones(3)}, dtype=torch.float16)
    _, w, _ = ck.read_model(tmp_path / "m")
    assert w["w"].dtype == torch.float16


def test_missing_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        ck.read_model(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="no model in"):
        ck.read_model(tmp_path)


def test_export_never_overwrites_a_folder_that_is_not_a_model(tmp_path: Path):
    from facediff.errors import FacediffError

    (tmp_path / "thesis.txt").write_text("years of work")
    with pytest.raises(FacediffError, match="refusing to export"):
        ck.export_model(tmp_path, tiny_config(), {"w": torch.ones(1)})
    assert (tmp_path / "thesis.txt").read_text() == "years of work"
    ck.export_model(tmp_path / "m", tiny_config(), {"w": torch.ones(1)})
    ck.export_model(tmp_path / "m", tiny_config(), {"w": torch.zeros(1)})  # a model: replaced
    assert ck.read_model(tmp_path / "m")[1]["w"][0] == 0
