"""facediff.allocator: glibc's settings apply once, and never over a user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = ("import facediff.allocator as a; first = a.tune_allocator(); "
         "print(first, a.tune_allocator())")


def _run(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "FACEDIFF_TUNE_MALLOC")}
    return subprocess.run([sys.executable, "-c", CHECK], env={**clean, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_settings_apply_on_linux_and_once():
    assert _run() == "True True"


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "2"}, {"FACEDIFF_TUNE_MALLOC": "0"}])
def test_a_users_own_choice_is_left_alone(env: dict[str, str]):
    assert _run(**env) == "False False"


def test_the_cli_applies_them(monkeypatch: pytest.MonkeyPatch):
    from facediff.cli import main

    calls: list[bool] = []
    monkeypatch.setattr("facediff.cli.tune_allocator", lambda: calls.append(True) or True)
    assert main(["config", "--list"]) == 0
    assert calls == [True]


def test_the_python_api_applies_them_on_a_cpu(monkeypatch: pytest.MonkeyPatch, faces_dir,
                                              tmp_path):
    """facediff.load() on a CPU and facediff.train() tune it as the CLI does: without it,
    sampling from Python was 1.8x slower than `facediff sample` (facediff/api.py)."""
    import facediff
    from tests.conftest import tiny_config

    calls: list[str] = []
    monkeypatch.setattr("facediff.api.tune_allocator", lambda: calls.append("load") or True)
    monkeypatch.setattr("facediff.allocator.tune_allocator",
                        lambda: calls.append("train") or True)
    facediff.load("celebahq-32", device="cpu")
    assert calls == ["load"]
    facediff.train(tiny_config(faces_dir, "train.max_steps=1"), tmp_path / "run",
                   progress=False)
    assert calls == ["load", "train"]
    assert (tmp_path / "run" / "model").is_dir()  # facediff.train after load: it trained
