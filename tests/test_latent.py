"""Latent diffusion end to end on tiny data: the autoencoder task on the one trainer (exact
resume), the latent cache and its key, latent train -> sample -> eval -> edit, the latent
export round trip, and the errors of mismatched or misplaced models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import facediff
import facediff.eval.features as features_mod
from facediff.cli import main
from facediff.data.latents import latent_cache_path, latent_key
from facediff.diffusion.editing import edit_photo, load_photo
from facediff.model.autoencoder import load_autoencoder, weights_digest
from facediff.train.autoencoder import train_autoencoder
from facediff.train.trainer import Trainer, train
from tests.conftest import tiny_args, tiny_config
from tests.test_eval import TinyFeatures
from tests.test_train import _tensors

# a 2-level AutoencoderTiny (factor 2: 16 px -> 8x8x4) and its discriminator, switched on at
# step 2 so that short runs train it with the adversarial term
AE = ["task=autoencoder", "autoencoder.kind=tiny", "autoencoder.block_out_channels=[8,8]",
      "autoencoder.blocks_per_level=1", "autoencoder.disc_start=2", "autoencoder.disc_width=8",
      "autoencoder.disc_layers=2", "autoencoder.adv_weight=0.1", "train.sample_n=4"]
# the U-Net of a latent model on 8x8x4 latents
LATENT = ["model.block_out_channels=[16,16]", "model.attention_levels=[]"]


def _set(options: list[str]) -> list[str]:
    return [a for o in options for a in ("--set", o)]


@pytest.fixture(scope="module")
def ae_run(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ae") / "ae"
    assert main(["autoencoder", "train", "--out", str(run), *tiny_args(faces_dir),
                 *_set(AE), "--max-steps", "6", "-q"]) == 0
    return run


@pytest.fixture(scope="module")
def latent_run(faces_dir: Path, ae_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("latent") / "run"
    assert main(["train", "--out", str(run), *tiny_args(faces_dir), *_set(LATENT),
                 "--autoencoder", str(ae_run), "--max-steps", "6", "-q"]) == 0
    return run


def test_autoencoder_training_resumes_bit_exactly(faces_dir: Path, tmp_path: Path):
    # the pause (step 3) falls after the discriminator's term is switched on (step 2)
    cfg = tiny_config(faces_dir, *AE, "autoencoder.kind=kl", "train.max_steps=6",
                      "data.val_fraction=0.25", "train.val_every=2")
    straight = train_autoencoder(cfg, tmp_path / "a", progress=False)
    paused = train_autoencoder(cfg, tmp_path / "b", progress=False, until_step=3)
    assert paused.reason == "paused" and paused.step == 3
    resumed = train_autoencoder(cfg, tmp_path / "b", progress=False)
    assert straight.step == resumed.step == 6 and straight.best_val_loss is not None
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert a.keys() == b.keys()
    assert any(k.startswith("model.disc.") for k in a)  # the discriminator is checkpointed
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the export holds the EMA autoencoder alone, and loads as one
    export = load_file(str(tmp_path / "a" / "model" / "weights.safetensors"))
    assert export and not any(k.startswith(("disc.", "ae.")) for k in export)
    first, saved, digest = load_autoencoder(tmp_path / "a")
    assert saved.task == "autoencoder" and first.kind == "kl" and len(digest) == 64
    # a run with checkpoints only (killed before its export): the newest checkpoint's EMA
    import shutil

    shutil.rmtree(tmp_path / "a" / "model")
    assert load_autoencoder(tmp_path / "a")[2] == digest
    assert (tmp_path / "a" / "samples" / "step-0000006.png").is_file()


def test_autoencoder_loss_falls(faces_dir: Path, tmp_path: Path):
    cfg = tiny_config(faces_dir, *AE, "autoencoder.disc_start=1000", "train.max_steps=60",
                      "train.lr=0.005", "train.log_every=10")
    result = train_autoencoder(cfg, tmp_path, progress=False)
    rows = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[1:]
    first, last = float(rows[0].split(",")[2]), float(rows[-1].split(",")[2])
    assert result.reason == "finished" and last < 0.6 * first, (first, last)


def test_training_crops_are_cut_from_the_flipped_images(faces_dir: Path, tmp_path: Path):
    from facediff.train.autoencoder import AutoencoderTrainer

    cfg = tiny_config(faces_dir, *AE, "autoencoder.train_crop=8")
    trainer = AutoencoderTrainer(cfg, tmp_path, progress=False)
    batch = trainer.draw_batch(0)
    crops = trainer.images(batch, slice(0, 8))
    whole = super(AutoencoderTrainer, trainer).images(batch, slice(0, 8))
    assert crops.shape == (8, 3, 8, 8) and batch.crops is not None
    for i, (top, left) in enumerate(batch.crops[:8].tolist()):
        assert torch.equal(crops[i], whole[i, :, top:top + 8, left:left + 8])
    assert len({tuple(c) for c in batch.crops.tolist()}) > 1  # each image its own crop
    from facediff.errors import ConfigError

    for bad in ("autoencoder.train_crop=20", "autoencoder.train_crop=7"):
        with pytest.raises(ConfigError, match="train_crop"):
            tiny_config(faces_dir, *AE, bad)


def test_the_latent_cache_key_follows_the_weights_and_the_pixels(ae_run: Path):
    first, cfg, digest = load_autoencoder(ae_run)
    images = np.zeros((4, 16, 16, 3), np.uint8)
    assert latent_key(digest, images) == latent_key(digest, images.copy())
    changed = {k: v.clone() for k, v in first.state_dict().items()}
    name = next(iter(changed))
    changed[name] += 1e-3
    other = weights_digest(changed)
    assert other != digest and latent_key(other, images) != latent_key(digest, images)
    images2 = images.copy()
    images2[0, 0, 0, 0] = 1
    assert latent_key(digest, images2) != latent_key(digest, images)
    assert latent_cache_path(cfg.data, digest, images).name.startswith("latents-")
    assert latent_key(digest, images, flips=False) != latent_key(digest, images)
    from facediff.data.latents import encode_all

    both, one = encode_all(first, images), encode_all(first, images, flips=False)
    assert both.shape == (4, 2, 4, 8, 8) and one.shape == (4, 1, 4, 8, 8)
    assert np.allclose(both[:, 0], one[:, 0], atol=1e-5)


def test_latent_training_measures_the_scale_and_keeps_its_autoencoder(latent_run: Path,
                                                                     ae_run: Path):
    model = facediff.load(latent_run, device="cpu")
    ae = model.config.autoencoder
    assert model.net.latent and ae.kind == "tiny" and ae.digest
    assert len(ae.shift) == len(ae.scale) == 4 and all(s > 0 for s in ae.scale)
    _, _, digest = load_autoencoder(ae_run)
    assert ae.digest == digest == load_autoencoder(latent_run / "autoencoder")[2]
    assert model.net.config.sample_size == 8 and model.net.config.in_channels == 4
    # the training latents, normalised as the U-Net sees them: mean ~0, std ~1 per channel
    trainer = Trainer(model.config, latent_run, progress=False)
    lat = trainer.train_images
    assert lat.shape[1:] == (2, 4, 8, 8)
    assert torch.allclose(lat.mean(dim=(0, 1, 3, 4)), torch.zeros(4), atol=1e-3)
    assert torch.allclose(lat.std(dim=(0, 1, 3, 4)), torch.ones(4), atol=1e-2)
    # encode -> normalise -> denormalise -> decode is the autoencoder's own round trip
    from facediff.data.transforms import uint8_to_model

    x = uint8_to_model(torch.from_numpy(np.array(trainer.data.images[:4])))
    fs = trainer.net.first_stage
    assert torch.allclose(trainer.net.decode(trainer.net.to_latent(x)),
                          fs.decode(fs.encode(x)[0]).clamp(-1, 1), atol=1e-4)
    # index 1 is the mirror image's latent
    flipped = trainer.net.to_latent(x[:2].flip(3))
    assert torch.allclose(flipped, lat[:2, 1], atol=1e-4)


def test_latents_are_neither_clipped_nor_clamped_before_decoding(latent_run: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """Unit-variance latents: a third of their values lie outside [-1, 1]; clipping x0 or
    clamping the result to the image range would cut them."""
    import facediff.diffusion.sampling as sampling

    seen = []
    real_loop = sampling.sample_loop

    def spy(denoiser, scheduler, x, generators, **kw):
        seen.append((scheduler.config.get("clip_sample", False), kw.get("clamp", True)))
        return real_loop(denoiser, scheduler, x, generators, **kw)

    monkeypatch.setattr(sampling, "sample_loop", spy)
    model = facediff.load(latent_run, device="cpu")
    for sampler in ("ddim", "ddpm", "dpmpp"):
        model.sample_tensor(1, steps=2, sampler=sampler)
    assert seen == [(False, False)] * 3
    pixel = facediff.load(None, device="cpu")  # the bundled pixel model still clamps
    pixel.sample_tensor(1, steps=2, sampler="ddim")
    assert seen[-1] == (True, True)


def test_latent_resume_needs_no_autoencoder_flag_and_is_exact(faces_dir: Path, ae_run: Path,
                                                              tmp_path: Path):
    first, _, _ = load_autoencoder(ae_run)
    cfg = tiny_config(faces_dir, *LATENT, "autoencoder.kind=tiny",
                      "autoencoder.block_out_channels=[8,8]", "autoencoder.blocks_per_level=1",
                      "train.max_steps=6", "data.val_fraction=0.25", "train.val_every=3")
    train(cfg, tmp_path / "a", progress=False, autoencoder=first)
    cfg_b = tiny_config(faces_dir, *LATENT, "autoencoder.kind=tiny",
                        "autoencoder.block_out_channels=[8,8]",
                        "autoencoder.blocks_per_level=1", "train.max_steps=6",
                        "data.val_fraction=0.25", "train.val_every=3")
    train(cfg_b, tmp_path / "b", progress=False, autoencoder=first, until_step=3)
    saved = facediff.config.Config.load(tmp_path / "b" / "config.yaml")
    resumed = train(saved, tmp_path / "b", progress=False)  # the run's own autoencoder copy
    assert resumed.step == 6
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_latent_sample_eval_edit_and_export(latent_run: Path, tmp_path: Path,
                                            faces_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(features_mod, "InceptionFeatures", TinyFeatures)
    out = tmp_path / "s"
    assert main(["sample", str(latent_run), "--n", "3", "--steps", "3", "--out",
                 str(out), "-q"]) == 0
    imgs = sorted(p for p in out.glob("*.png") if p.name != "grid.png")
    assert len(imgs) == 3
    from PIL import Image

    assert Image.open(imgs[0]).size == (16, 16)  # decoded: full resolution
    report = tmp_path / "eval"
    assert main(["eval", str(latent_run), "--ref", str(faces_dir), "--n", "8", "--steps", "2",
                 "--out", str(report), "-q"]) == 0
    assert json.loads((report / "results.json").read_text())
    # edit a photo: encode, invert in latent space, decode
    model = facediff.load(latent_run, device="cpu")
    photo = load_photo(sorted(faces_dir.glob("*.png"))[3], model)
    assert photo.shape == (1, 3, 16, 16)
    none = torch.zeros(0, dtype=torch.long)
    edited = edit_photo(model, photo, none, none, method="ddim")
    assert edited.shape == (16, 16, 3) and edited.dtype == torch.uint8
    # the export round trip: one folder, one call, the same faces
    a = model.sample_tensor(2, steps=3, seed=5)
    export = tmp_path / "export"
    assert main(["export", str(latent_run), "--out", str(export)]) == 0
    again = facediff.load(export, device="cpu")
    assert again.net.latent and torch.equal(again.sample_tensor(2, steps=3, seed=5), a)
    saved = model.save(tmp_path / "saved")
    assert torch.equal(facediff.load(saved, device="cpu").sample_tensor(2, steps=3, seed=5), a)
    # reverse-process figure: decoded x0 previews
    fig = tmp_path / "rev.png"
    assert main(["viz", "reverse", str(latent_run), "--steps", "3", "--out", str(fig),
                 "--animation", "none", "-q"]) == 0
    assert fig.is_file()


def test_latent_evaluation_during_training_scores_decoded_faces(faces_dir: Path, ae_run: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(features_mod, "InceptionFeatures", TinyFeatures)
    seen: list[tuple[int, ...]] = []
    real_call = TinyFeatures.__call__

    def spy(self: TinyFeatures, images: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape[1:]))
        return real_call(self, images)

    monkeypatch.setattr(TinyFeatures, "__call__", spy)
    first, _, _ = load_autoencoder(ae_run)
    cfg = tiny_config(faces_dir, *LATENT, "autoencoder.kind=tiny",
                      "autoencoder.block_out_channels=[8,8]", "autoencoder.blocks_per_level=1",
                      "train.max_steps=4", "train.eval_every=2", "train.eval_n=4",
                      "train.eval_ref_n=8", "sample.steps=2")
    train(cfg, tmp_path, progress=False, autoencoder=first)
    rows = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    fids = [r.split(",")[header.index("fid")] for r in rows[1:]]
    assert sum(1 for f in fids if f) == 2
    assert seen and set(seen) == {(16, 16, 3)}  # decoded images, never 8x8x4 latents
    assert (tmp_path / "best-fid" / "weights.safetensors").is_file()


def _one_line_error(capsys: pytest.CaptureFixture, code: int, fragment: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err, err


def test_misplaced_and_mismatched_models_are_one_line_errors(
        ae_run: Path, latent_run: Path, faces_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture):
    # an autoencoder where a diffusion model is expected
    code = main(["sample", str(ae_run), "--n", "1", "--out", str(tmp_path / "x"), "-q"])
    _one_line_error(capsys, code, "is an autoencoder, not a diffusion model")
    # a diffusion model as --autoencoder
    code = main(["train", "--out", str(tmp_path / "r1"), *tiny_args(faces_dir), *_set(LATENT),
                 "--autoencoder", str(latent_run), "-q"])
    _one_line_error(capsys, code, "is a diffusion model, not an autoencoder")
    # an autoencoder whose latents do not fit the config's U-Net (factor 4 expected, 2 given)
    code = main(["train", "--out", str(tmp_path / "r2"), *tiny_args(faces_dir),
                 "--set", "autoencoder.kind=tiny", "--set", "autoencoder.block_out_channels="
                 "[8,8,8]", "--autoencoder", str(ae_run), "-q"])
    _one_line_error(capsys, code, "this model's U-Net expects 4x4x4 latents")
    # a U-Net too deep for the latent size
    code = main(["train", "--out", str(tmp_path / "r3"), *tiny_args(faces_dir),
                 "--set", "model.block_out_channels=[16,16,16,16,16]",
                 "--autoencoder", str(ae_run), "-q"])
    _one_line_error(capsys, code, "the latent size 8 must be divisible by 16")
    # a latent config without its autoencoder
    code = main(["train", "--out", str(tmp_path / "r4"), *tiny_args(faces_dir),
                 "--set", "autoencoder.kind=tiny", "-q"])
    _one_line_error(capsys, code, "needs its autoencoder: pass --autoencoder")
    # the wrong command for the config
    code = main(["autoencoder", "train", "--out", str(tmp_path / "r5"), *tiny_args(faces_dir),
                 "-q"])
    _one_line_error(capsys, code, "trains a diffusion model, not an autoencoder")
    code = main(["train", "--out", str(tmp_path / "r6"), *tiny_args(faces_dir), *_set(AE),
                 "-q"])
    _one_line_error(capsys, code, "use facediff autoencoder train")


def test_resuming_with_another_autoencoder_is_refused(ae_run: Path, latent_run: Path,
                                                     faces_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture):
    other = tmp_path / "ae2"
    assert main(["autoencoder", "train", "--out", str(other), *tiny_args(faces_dir),
                 *_set(AE), "--set", "train.seed=3", "--max-steps", "2", "-q"]) == 0
    code = main(["train", "--out", str(latent_run), "--autoencoder", str(other),
                 "--max-steps", "8", "-q"])
    _one_line_error(capsys, code, "the autoencoder's weights differ")


def test_autoencoder_eval_scores_and_writes_the_card(ae_run: Path, faces_dir: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture):
    monkeypatch.setattr(features_mod, "InceptionFeatures", TinyFeatures)
    report = tmp_path / "ae.json"
    assert main(["autoencoder", "eval", str(ae_run), "--data", str(faces_dir), "--n", "10",
                 "--split", "test faces", "--out", str(report), "--no-progress"]) == 0
    scores = json.loads(report.read_text())
    assert scores["n"] == 10 and scores["split"] == "test faces"
    assert 0 < scores["psnr"] < 60 and -1 <= scores["ssim"] <= 1 and scores["rfid"] >= 0
    card = (ae_run / "model" / "README.md").read_text()
    assert "test faces" in card and f"{scores['psnr']:.2f}" in card
    assert "PSNR" in capsys.readouterr().out


def test_a_latent_model_warm_starts_from_its_fp16_export(faces_dir: Path, ae_run: Path,
                                                         latent_run: Path, tmp_path: Path):
    from facediff.config import Config

    half = tmp_path / "half"
    assert main(["export", str(latent_run), "--out", str(half), "--half"]) == 0
    run = tmp_path / "b"
    assert main(["train", "--out", str(run), *tiny_args(faces_dir), *_set(LATENT),
                 "--autoencoder", str(ae_run), "--init", str(half), "--max-steps", "1",
                 "-q"]) == 0
    assert Config.load(run / "config.yaml").train.init_images == 6 * 8
    # the frozen autoencoder is the run's own float32 one, not the export's rounded copy
    ae = load_autoencoder(ae_run)[0].state_dict()
    got = load_file(str(run / "model" / "weights.safetensors"))
    rounded = load_file(str(half / "weights.safetensors"))
    assert any(not torch.equal(v, rounded[f"first_stage.{k}"].float()) for k, v in ae.items())
    for k, v in ae.items():
        assert torch.equal(got[f"first_stage.{k}"], v), k


def test_an_autoencoder_run_warm_starts_from_an_exported_autoencoder(ae_run: Path,
                                                                      faces_dir: Path,
                                                                      tmp_path: Path, capsys):
    """`facediff autoencoder train --init AE`: a new run begins at the export's weights
    (so an autoencoder trains on in pieces when its run dir is lost), counts its images, and
    refuses a diffusion model or another architecture in one line."""
    from facediff.config import Config
    from facediff.train import checkpoint as ck
    from facediff.train.autoencoder import AutoencoderTrainer

    export = ae_run / ck.EXPORT_DIR
    want = load_file(str(export / "weights.safetensors"))
    cfg = Config.load(ae_run / "config.yaml")
    cfg.train.init, cfg.train.max_steps = str(export), 2
    trainer = AutoencoderTrainer(cfg, tmp_path / "b", progress=False)
    trainer._resume_latest()
    for net in (trainer.net, trainer.ema_net):
        state = net.state_dict()
        assert all(torch.equal(state[f"ae.{k}"], v) for k, v in want.items())
    assert cfg.train.init_images == 6 * cfg.train.batch_size
    run = tmp_path / "c"
    assert main(["autoencoder", "train", "--out", str(run), *tiny_args(faces_dir), *_set(AE),
                 "--init", str(export), "--max-steps", "1", "-q"]) == 0
    assert Config.load(run / "config.yaml").train.init_images == 6 * cfg.train.batch_size
    wider = [o.replace("[8,8]", "[8,8,8]") if "block_out" in o else o for o in AE]
    code = main(["autoencoder", "train", "--out", str(tmp_path / "d"), *tiny_args(faces_dir),
                 *_set(wider), "--init", str(export), "--max-steps", "1", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot start from" in err[-1], err
