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
from tests.test_eval import TinyFeatures

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


def test_the_export_refuses_a_folder_it_does_not_own(tmp_path: Path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    plain = tmp_path / "plain"
    tiny_model(False).save(plain)
    assert main(["export", str(plain), "--format", "diffusers", "--out", str(busy)]) == 2
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine"


def _foreign_pipeline(out: Path, steps: int) -> object:
    """A tiny random DDPMPipeline as another tool would save it (google/ddpm-style U-Net
    settings facediff does not use itself), with a DDIM scheduler like facediff's."""
    import torch
    from diffusers import DDPMPipeline, UNet2DModel

    from facediff.config import DiffusionConfig
    from facediff.diffusion.sampling import make_scheduler

    torch.manual_seed(3)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3,
                       block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                       norm_num_groups=8, freq_shift=1, flip_sin_to_cos=False,
                       downsample_padding=0, norm_eps=1e-6)
    sched = make_scheduler("ddim", DiffusionConfig(beta_schedule="linear", prediction="eps"),
                           steps)
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.save_pretrained(str(out))
    return pipe


def test_facediff_samples_a_diffusers_pipeline_folder(tmp_path: Path):
    import torch

    pipe = _foreign_pipeline(tmp_path / "ddpm", 5)
    gens = [torch.Generator().manual_seed(4 + i) for i in range(2)]
    want = (pipe(batch_size=2, generator=gens, num_inference_steps=5,
                 output_type="np").images * 255).round().astype(np.uint8)
    model = facediff.load(tmp_path / "ddpm", device="cpu", precision="fp32")
    assert model.config.model.unet_extra["freq_shift"] == 1
    got = model.sample_tensor(2, sampler="ddim", steps=5, seed=4).numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    out = tmp_path / "faces"
    assert main(["sample", str(tmp_path / "ddpm"), "-n", "2", "--sampler", "ddim", "--steps",
                 "5", "--seed", "4", "--out", str(out), "--no-progress",
                 "--precision", "fp32"]) == 0
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(out / "sample_0001.png")), got[0])
    # and a facediff export of it round-trips to diffusers again
    assert main(["export", str(tmp_path / "ddpm"), "--format", "diffusers",
                 "--out", str(tmp_path / "again")]) == 0
    assert facediff.load(tmp_path / "again").config.model.unet_extra["norm_eps"] == 1e-6


def test_pipelines_facediff_cannot_run_are_one_line(tmp_path: Path, capsys):
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "scheduler": ["diffusers", "PNDMScheduler"]}))
    assert main(["sample", str(sd), "-n", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a StableDiffusionPipeline with text_encoder, vae" in err[0]
    _foreign_pipeline(tmp_path / "ddpm", 5)
    (tmp_path / "ddpm" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    assert main(["sample", str(tmp_path / "ddpm"), "-n", "1", "--out", str(tmp_path / "o")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _cache(root: Path, repo: str, model_dir: Path) -> Path:
    """A Hugging Face cache holding ``repo`` at one revision, laid out as the Hub's client
    lays it out (models--owner--name/refs/main -> snapshots/<commit>/...)."""
    import shutil

    base = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(model_dir, base / "snapshots" / commit)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    return base / "snapshots" / commit


def test_hub_ids_load_from_the_cache_offline(plain_dir: Path, tmp_path: Path, monkeypatch,
                                             capsys):
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf"
    _cache(cache, "someone/faces-64", plain_dir)
    pipe = tmp_path / "pipe"
    assert main(["export", str(plain_dir), "--format", "diffusers", "--out", str(pipe)]) == 0
    _cache(cache, "someone/faces-pipe", pipe)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = facediff.load("someone/faces-64", device="cpu", precision="fp32")
    want = facediff.load(plain_dir, device="cpu", precision="fp32")
    np.testing.assert_array_equal(model.sample_tensor(1, seed=2).numpy(),
                                  want.sample_tensor(1, seed=2).numpy())
    assert facediff.load("someone/faces-pipe").config.model == want.config.model
    capsys.readouterr()
    assert main(["sample", "someone/not-cached", "-n", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in the Hugging Face cache" in err[0], err


@pytest.mark.parametrize("error, says", [
    ("RepositoryNotFoundError", "no such model on the Hugging Face Hub (or it is private"),
    ("GatedRepoError", "is gated on the Hugging Face Hub"),
])
def test_hub_refusals_are_one_line(monkeypatch, tmp_path: Path, capsys, error: str, says: str):
    """What the Hub answers for a missing or private repo (401/404) and a gated one."""
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub import errors

    response = SimpleNamespace(headers={}, status_code=401, request=None, url="",
                               json=dict, text="")

    def refuse(*args, **kwargs):
        raise getattr(errors, error)("401 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    assert main(["sample", "someone/private", "-n", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


# FacediffPipeline folders (conditional, latent) run by diffusers in one fresh interpreter
# where importing facediff fails: argv = steps, then (folder, seed, attributes-json, npy) x k
RUN_CUSTOM_WITHOUT_FACEDIFF = """
import json, sys
sys.modules["facediff"] = None
import numpy as np, torch
from diffusers import DiffusionPipeline
steps, rest = int(sys.argv[1]), sys.argv[2:]
for folder, seed, attrs, npy in zip(*[iter(rest)] * 4):
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    gens = [torch.Generator().manual_seed(int(seed) + i) for i in range(2)]
    out = pipe(2, attributes=json.loads(attrs), generator=gens, num_inference_steps=steps,
               output_type="np")
    np.save(npy, (out.images * 255).round().astype(np.uint8))
    print(type(pipe).__name__, type(pipe.vae).__name__)
"""


def _latent_model(kind: str, conditional: bool) -> facediff.FaceModel:
    """A tiny latent model with an untrained autoencoder (random weights sample the same way)
    and a latent normalisation that is not the identity."""
    import torch

    from facediff.model.unet import build_net
    from tests.conftest import tiny_config
    from tests.test_app import CONDS

    cfg = tiny_config(None, "sample.steps=3", f"autoencoder.kind={kind}",
                      "autoencoder.block_out_channels=[8,8]", "autoencoder.blocks_per_level=1",
                      "autoencoder.shift=[0.1,0.2,0.3,0.4]", "autoencoder.scale=[2,1,0.5,1.5]")
    if conditional:
        cfg.conditions = list(CONDS)
    torch.manual_seed(0)
    net = build_net(cfg).eval().requires_grad_(False)
    return facediff.FaceModel(cfg, net, "tiny", precision="fp32")


def test_conditional_and_latent_exports_sample_the_same_faces_without_facediff(tmp_path: Path):
    from facediff.hub import export_pipeline

    cases = {  # name: (model, attributes)
        "cond": (tiny_model(True), {"Smiling": "1", "hair": "red"}),
        "latent-tiny": (_latent_model("tiny", False), None),
        "latent-kl-cond": (_latent_model("kl", True), {"hair": "dark"}),
    }
    argv = []
    for name, (model, attrs) in cases.items():
        folder = tmp_path / name
        export_pipeline(model, folder)
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == ["facediff_pipeline", "FacediffPipeline"]
        assert (folder / "facediff_pipeline.py").is_file()
        assert (index["vae"][1] is not None) == name.startswith("latent")
        argv += [str(folder), "7", json.dumps(attrs), str(tmp_path / f"{name}.npy")]
    run = subprocess.run([sys.executable, "-c", RUN_CUSTOM_WITHOUT_FACEDIFF, "3", *argv],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    for name, (model, attrs) in cases.items():
        theirs = np.load(tmp_path / f"{name}.npy")
        ours = model.sample_tensor(2, seed=7, steps=3, attrs=attrs).numpy()
        assert theirs.shape == ours.shape
        assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1, name
        # and the folder reads back into facediff as the same model
        back = facediff.load(tmp_path / name, device="cpu", precision="fp32")
        np.testing.assert_array_equal(back.sample_tensor(2, seed=7, steps=3, attrs=attrs).numpy(),
                                      ours)
    # guidance changes the faces, so the comparison above covered it (the default scale, 3)
    model, attrs = cases["cond"]
    assert model.config.sample.guidance == 3.0
    assert not np.array_equal(model.sample_tensor(2, seed=7, steps=3, attrs=attrs).numpy(),
                              model.sample_tensor(2, seed=7, steps=3, attrs=attrs,
                                                  guidance=1.0).numpy())


def test_train_init_fine_tunes_a_diffusers_pipeline(faces_dir: Path, tmp_path: Path):
    from safetensors.torch import load_file

    from facediff.commands.train import init_config
    from facediff.train.trainer import Trainer

    pipe = tmp_path / "ddpm"
    _foreign_pipeline(pipe, 5)
    want = load_file(str(pipe / "unet" / "diffusion_pytorch_model.safetensors"))
    # the new run starts at the pipeline's weights, with its architecture and schedule
    cfg = init_config(str(pipe))
    cfg.data.path, cfg.train.init = str(faces_dir), str(pipe)
    trainer = Trainer(cfg, tmp_path / "direct", progress=False)
    trainer._resume_latest()
    for net in (trainer.net, trainer.ema_net):
        state = net.state_dict()
        assert all(torch_equal(state[f"unet.{k}"], v) for k, v in want.items())
    # and through the CLI: a step of fine-tuning on the user's faces, then sampled
    run = tmp_path / "run"
    assert main(["train", "--data", str(faces_dir), "--out", str(run), "--init", str(pipe),
                 "--max-steps", "1", "--no-progress", "--set", "train.batch_size=4"]) == 0
    tuned = facediff.load(run, device="cpu", precision="fp32")
    assert tuned.config.model.unet_extra["freq_shift"] == 1
    assert tuned.config.train.init == str(pipe.resolve())
    assert tuned.sample_tensor(1, seed=0, sampler="ddim", steps=2).shape == (1, 16, 16, 3)


def torch_equal(a: object, b: object) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_a_diffusers_pipeline_is_evaluated_drawn_edited_and_served(
        faces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The other commands take a pipeline folder like any model: eval (with the tests' tiny
    feature network), the reverse-process figure, an SDEdit of a photo, and the app's
    session."""
    from PIL import Image

    from facediff.eval import features

    monkeypatch.setattr(features, "InceptionFeatures", TinyFeatures)

    from facediff.app.logic import Limits, Session

    pipe = tmp_path / "ddpm"
    _foreign_pipeline(pipe, 5)
    fast = ["--sampler", "ddim", "--steps", "3", "--precision", "fp32"]
    out = tmp_path / "eval"
    assert main(["eval", str(pipe), "--ref", str(faces_dir), "-n", "4", *fast, "--out",
                 str(out), "--no-progress", "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert row["n"] == 4 and np.isfinite(row["fid"])
    fig = tmp_path / "reverse.png"
    assert main(["viz", "reverse", str(pipe), "--n", "1", *fast, "--animation", "none",
                 "--out", str(fig), "-q"]) == 0
    assert Image.open(fig).width > 16
    photo = faces_dir / "face_00001.png"
    edited = tmp_path / "edited.png"
    assert main(["edit", str(photo), "--model", str(pipe), "--method", "sdedit",
                 "--strength", "0.5", "--steps", "4", "--no-align", "--precision", "fp32",
                 "--out", str(edited), "-q"]) == 0
    assert Image.open(edited).size == Image.open(photo).size
    session = Session(facediff.load(pipe, device="cpu", precision="fp32"),
                      Limits(max_images=2, max_steps=5), out_dir=tmp_path / "app")
    assert session.check(2, 3, "ddim") == (2, 3)


def test_facediff_samples_an_ldm_pipeline_with_its_vq_autoencoder(tmp_path: Path, capsys):
    """A tiny random LDMPipeline (CompVis/ldm-celebahq-256's kind: a U-Net on the latents of a
    VQModel) gives the same faces in facediff as in diffusers."""
    import torch
    from diffusers import LDMPipeline, UNet2DModel, VQModel

    from facediff.config import DiffusionConfig
    from facediff.diffusion.sampling import make_scheduler

    torch.manual_seed(5)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    vq = VQModel(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                 down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=3,
                 num_vq_embeddings=16, norm_num_groups=4, sample_size=16, scaling_factor=0.7)
    sched = make_scheduler("ddim", DiffusionConfig(beta_schedule="linear", prediction="eps"), 3,
                           clip_sample=False)
    pipe = LDMPipeline(vqvae=vq, unet=unet, scheduler=sched)
    pipe.save_pretrained(str(tmp_path / "ldm"))
    gens = [torch.Generator().manual_seed(4 + i) for i in range(2)]
    want = (pipe(batch_size=2, generator=gens, num_inference_steps=3,
                 output_type="np").images * 255).round().astype(np.uint8)
    model = facediff.load(tmp_path / "ldm", device="cpu", precision="fp32")
    ae = model.config.autoencoder
    assert (ae.kind, ae.scale, model.config.data.image_size) == ("vq", [0.7] * 3, 16)
    got = model.sample_tensor(2, sampler="ddim", steps=3, seed=4).numpy()
    assert got.shape == want.shape == (2, 16, 16, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # an autoencoder run cannot train a VQ first stage: one line
    from facediff.config import ConfigError, validate

    model.config.task = "autoencoder"
    with pytest.raises(ConfigError, match="facediff does not train them"):
        validate(model.config)
