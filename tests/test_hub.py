"""``facediff export --format diffusers``: a pipeline folder diffusers loads and runs without
facediff, giving the same faces as facediff for the same seeds, sampler and steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facediff
from facediff.cli import main
from tests.test_app import tiny_model

# diffusers' pipeline run in a fresh interpreter where importing facediff fails
RUN_WITHOUT_FACEDIFF = """
import sys
sys.modules["facediff"] = None  # any import of facediff now raises ImportError
import numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1])
gens = [torch.Generator().manual_seed(int(sys.argv[2]) + i) for i in range(3)]
out = pipe(batch_size=3, generator=gens, num_inference_steps=int(sys.argv[3]), output_type="np")
np.save(sys.argv[4], (out.images * 255).round().astype(np.uint8))
print(type(pipe).__name__, type(pipe.scheduler).__name__)
"""


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hub") / "plain"
    tiny_model(False).save(d)
    return d


def test_a_diffusers_export_samples_the_same_faces_without_facediff(plain_dir: Path,
                                                                      tmp_path: Path, capsys):
    out = tmp_path / "pipe"
    assert main(["export", str(plain_dir), "--format", "diffusers", "--out", str(out)]) == 0
    assert "DiffusionPipeline.from_pretrained" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert (out / "facediff" / "config.yaml").is_file()
    model = facediff.load(plain_dir, device="cpu", precision="fp32")
    s = model.settings()
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["timestep_spacing"] == "trailing"
    assert sched["prediction_type"] == {"eps": "epsilon", "v": "v_prediction",
                                        "x0": "sample"}[model.config.diffusion.prediction]
    npy = tmp_path / "faces.npy"
    run = subprocess.run([sys.executable, "-c", RUN_WITHOUT_FACEDIFF, str(out), "11",
                          str(s.steps), str(npy)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = np.load(npy)
    ours = model.sample_tensor(3, seed=11).numpy()
    assert theirs.shape == ours.shape
    # the same loop and noise: at most a rounding step apart (float order of operations)
    assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1


def test_the_export_refuses_what_it_does_not_cover(tmp_path: Path, capsys):
    cond = tmp_path / "cond"
    tiny_model(True).save(cond)
    assert main(["export", str(cond), "--format", "diffusers", "--out",
                 str(tmp_path / "p")]) == 2
    assert "is conditional" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    plain = tmp_path / "plain"
    tiny_model(False).save(plain)
    assert main(["export", str(plain), "--format", "diffusers", "--out", str(busy)]) == 2
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine"
