"""``facediff push`` and ``facediff card``: the repo a push uploads (a diffusers pipeline at the
root, facediff's export in facediff/, the card as README.md) and the card made from the run's
config, logs and scores. Only the Hub's two calls (create_repo, upload_folder) are replaced."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import facediff
from facediff.cli import main
from facediff.config import DataConfig
from facediff.hub.card import (
    CardInputs,
    data_licence,
    load_for_card,
    model_card,
    read_training,
)
from facediff.train.checkpoint import is_exported_model
from tests.conftest import assert_one_line_exit_2
from tests.test_app import tiny_model

STEP = 120
METRICS = """step,images,loss,lr,grad_norm,img_per_s,val_loss,fid,kid,precision,recall,eval_n,time
20,160,0.5,0.002,1,80,,,,,,,1100
60,480,0.4,0.002,1,90,,55.5,0.02,0.6,0.3,500,1900
80,640,0.4,0.002,1,100,,,,,,,5600
120,960,0.3,0.002,1,110,,44.4,0.015,0.62,0.35,500,6400
140,1120,0.3,0.002,1,110,,,,,,,6600
"""
# two sessions: on a GPU from step 0 (started at t=1000), resumed on a CPU at step 60 (t=5000)
SESSIONS = [{"time": 1000.0, "step": 0, "device": "cuda", "name": "NVIDIA H200",
             "processes": 1, "precision": "bf16"},
            {"time": 5000.0, "step": 60, "device": "cpu", "name": "AMD EPYC 9R14 (2 cores)",
             "processes": 2, "precision": "no"}]
EXPECTED_FILES = {"README.md", "model_index.json", "scheduler/scheduler_config.json",
                  "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "facediff/config.yaml", "facediff/weights.safetensors"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run as the trainer leaves it, as far as a card reads it: config.yaml, checkpoints/,
    the export at step 120 (trained past it, to 140), logs/machines.jsonl, logs/metrics.csv."""
    run = tmp_path_factory.mktemp("push") / "celebahq-run"
    model = tiny_model(False)
    model.config.data.path = "../shared/datasets/celebahq-128"
    model.step = STEP
    (run / "logs").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text(model.config.to_yaml())
    model.save(run / "model")
    (run / "logs" / "machines.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in SESSIONS) + '{"time": 9')  # a cut last line
    (run / "logs" / "metrics.csv").write_text(METRICS)
    return run


@pytest.fixture(scope="module")
def scores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """facediff eval's results.json and bench/release_eval.py's summary.json."""
    d = tmp_path_factory.mktemp("scores")
    (d / "eval").mkdir()
    (d / "eval" / "results.json").write_text(json.dumps([{
        "sampler": "dpmpp", "steps": 3, "dtype": "fp32", "nfe": 3, "cond": "-", "guidance": "-",
        "fid": 33.3, "kid": 0.0123, "kid_std": 0.001, "precision": 0.7, "recall": 0.4,
        "n": 1000, "n_ref": 5000, "kid_subset": 1000, "seconds": 10.0}]))
    (d / "summary.json").write_text(json.dumps({
        "model": "x", "size": 16,
        "held-out": {"fid": 40.1, "kid": 0.02, "kid_std": 0.002, "precision": 0.6,
                     "recall": 0.5, "n": 2000, "n_ref": 2000},
        "real vs real (train vs held-out)": {"fid": 5.0, "kid": 0.001, "precision": 0.8,
                                             "recall": 0.8, "n": 2000, "n_ref": 2000},
        "seconds_16": 1.2, "seconds_1000": 40.0}))
    return [f"test split={d / 'eval' / 'results.json'}", str(d / "summary.json")]


class FakeHub:
    """HfApi.create_repo and HfApi.upload_folder, recording what they were given (and a copy
    of the uploaded folder, which the push removes afterwards)."""

    def __init__(self, root: Path, error: Exception | None = None) -> None:
        self.root, self.error = root, error
        self.created: list[tuple[str, dict]] = []
        self.uploads: list[dict] = []

    def create_repo(self, api: object, repo_id: str, **kw: object) -> str:
        self.created.append((repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, api: object, **kw: object) -> object:
        if self.error is not None:
            raise self.error
        copy = self.root / f"upload-{len(self.uploads)}"
        shutil.copytree(kw["folder_path"], copy)
        self.uploads.append({**kw, "copy": copy, "token": getattr(api, "token", None)})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/1")


@pytest.fixture
def hub(monkeypatch, tmp_path: Path) -> FakeHub:
    import huggingface_hub
    import huggingface_hub.constants

    fake = FakeHub(tmp_path)
    # plain functions, so that they are the instance's methods (api is their self)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda api, *a, **kw: fake.create_repo(api, *a, **kw))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda api, **kw: fake.upload_folder(api, **kw))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    # the staging folder: under tmp_path, so the test sees that it is removed
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return fake


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _weights(model: facediff.FaceModel) -> dict[str, torch.Tensor]:
    return model.net.state_dict()


def test_push_uploads_both_formats_and_the_card_from_the_run(run_dir: Path, scores: list[str],
                                                            hub: FakeHub, tmp_path: Path,
                                                            capsys):
    args = ["--repo", "alice/faces-16", *[a for s in scores for a in ("--scores", s)]]
    assert main(["push", str(run_dir), *args, "--private"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert hub.created == [("alice/faces-16", {"private": True, "exist_ok": True,
                                               "repo_type": "model"})]
    (up,) = hub.uploads
    assert up["repo_id"] == "alice/faces-16" and up["token"] == "hf_test_token"
    assert "step 120" in up["commit_message"]
    assert "*.safetensors" in up["delete_patterns"]  # a re-push leaves no stale weights
    repo = up["copy"]
    assert _files(repo) == EXPECTED_FILES
    assert not any((tmp_path / "tmp").iterdir())  # the staging folder is gone

    # both formats hold the run's exported weights, in float32 (no --half)
    want = _weights(facediff.load(run_dir / "model", device="cpu", precision="fp32"))
    assert is_exported_model(repo / "facediff")
    for folder in (repo, repo / "facediff"):
        got = _weights(facediff.load(folder, device="cpu", precision="fp32"))
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    index = json.loads((repo / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]

    card = (repo / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["license"] == "other"
    assert meta["license_name"] == "celeba-non-commercial-research"
    assert meta["library_name"] == "diffusers"
    assert meta["pipeline_tag"] == "unconditional-image-generation"
    assert {"facediff", "faces", "unconditional-image-generation"} <= set(meta["tags"])
    assert "# alice/faces-16" in body
    for fact in (
        # the calls
        "facediff sample alice/faces-16 -n 16", 'facediff.load("alice/faces-16")',
        'DiffusionPipeline.from_pretrained("alice/faces-16")\n',
        "num_inference_steps=3",
        # the data's licence
        "recognised by its name as CelebA-HQ", "non-commercial research use only",
        # the config
        "channels 16-32", "AdamW at lr 0.002", "half-life of 10,000 images", "`tiny`",
        "stored as float32", "  path: ../shared/datasets/celebahq-128",
        # machines.jsonl and metrics.csv, up to step 120: 900 s + 1400 s
        "NVIDIA H200 (cuda), 1 process, mixed precision bf16",
        "AMD EPYC 9R14 (2 cores) (cpu), 2 processes, no mixed precision",
        "38 minutes of wall time over 2 sessions", "120 of batch 8 (of 2,000 planned); "
        "960 images seen", "95 images/s",
        # the scores, with their split and n
        "| test split | 1,000 | 5,000 | dpmpp | 3 | 33.30 | 12.30 ± 1.00 | 0.700 | 0.400 |",
        "| held-out | 2,000 | 2,000 |  |  | 40.10 | 20.00 ± 2.00 | 0.600 | 0.500 |",
        "| real vs real (train vs held-out) | 2,000 |",
        "| training data, during training (step 120) | 500 |  |  |  | 44.40 |",
        "16 images in 1.2 s, 1,000 in 40 s",
    ):
        assert fact in body, fact
    assert "trust_remote_code" not in body
    assert "Nothing was measured" not in body

    # facediff card writes the same card
    out = tmp_path / "card.md"
    assert main(["card", str(run_dir), *args, "--out", str(out)]) == 0
    assert out.read_text() == card


def test_push_half_and_a_hand_written_card(run_dir: Path, hub: FakeHub, tmp_path: Path):
    mine = tmp_path / "mine.md"
    mine.write_text("---\nlicense: other\n---\n# edited by hand\n")
    assert main(["push", str(run_dir / "model"), "--repo", "alice/faces", "--half",
                 "--card", str(mine), "--message", "v2"]) == 0
    (up,) = hub.uploads
    assert up["commit_message"] == "v2"
    repo = up["copy"]
    assert (repo / "README.md").read_text() == mine.read_text()
    from safetensors.torch import load_file

    for f in ("facediff/weights.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        assert {v.dtype for v in load_file(repo / f).values()} == {torch.float16}, f


def test_dry_run_stages_and_lists_but_uploads_nothing(run_dir: Path, hub: FakeHub,
                                                      monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no login either
    assert main(["push", str(run_dir), "--repo", "alice/faces", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub.created == [] and hub.uploads == []
    assert "dry run: nothing uploaded" in out and "7 files" in out
    for f in EXPECTED_FILES:
        assert f"  {f} " in out, f
    assert "KiB" in out
    # the same push for real needs the token it does not have
    assert_one_line_exit_2(["push", str(run_dir), "--repo", "alice/faces"], capsys,
                           "log in with `hf auth login` or set HF_TOKEN")
    assert hub.uploads == []


def _http(kind: str, status: int) -> Exception:
    from huggingface_hub import errors

    response = SimpleNamespace(headers={}, status_code=status, request=None, url="",
                               json=dict, text="")
    return getattr(errors, kind)(f"{status} Client Error", response=response)


@pytest.mark.parametrize("error, says", [
    (("HfHubHTTPError", 401), "refused the token (401 Unauthorized): log in with `hf auth login`"),
    (("HfHubHTTPError", 403), "(403 Forbidden): it needs a token with write access to alice"),
    (("RepositoryNotFoundError", 404), "no repo alice/faces this token can write to"),
    (("HfHubHTTPError", 500), "refused the push to alice/faces: 500 Client Error"),
    (ConnectionError("Name or service not known"), "cannot reach the Hugging Face Hub"),
])
def test_hub_refusals_are_one_line(run_dir: Path, hub: FakeHub, tmp_path: Path, capsys,
                                   error: object, says: str):
    hub.error = _http(*error) if isinstance(error, tuple) else error
    assert_one_line_exit_2(["push", str(run_dir), "--repo", "alice/faces"], capsys, says)
    assert not any((tmp_path / "tmp").iterdir())


def test_bad_input_is_one_line(run_dir: Path, hub: FakeHub, tmp_path: Path, monkeypatch,
                               capsys):
    import huggingface_hub.constants

    push = ["push", str(run_dir)]
    for repo in ("alice", "alice/faces/x", "alice-/faces", "alice/fa ces", "alice/a--b"):
        assert_one_line_exit_2([*push, "--repo", repo], capsys, "--repo must be")
    assert_one_line_exit_2([*push, "--repo", "a/b", "--scores", str(tmp_path / "none.json")],
                           capsys, "cannot read the scores")
    (tmp_path / "empty.json").write_text('{"model": "x"}')
    assert_one_line_exit_2(["card", str(run_dir), "--scores", str(tmp_path / "empty.json")],
                           capsys, "holds no scores")
    assert_one_line_exit_2([*push, "--repo", "a/b", "--license", "MIT License"], capsys,
                           "--license takes a Hugging Face licence id")
    assert_one_line_exit_2(["push", str(tmp_path / "nothing"), "--repo", "a/b"], capsys,
                           "model not found")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert_one_line_exit_2([*push, "--repo", "a/b"], capsys, "HF_HUB_OFFLINE is set")
    assert hub.created == [] and hub.uploads == []


def test_a_model_without_run_or_scores_says_what_it_does_not_know(tmp_path: Path, capsys):
    d = tmp_path / "faces"
    model = tiny_model(False)
    model.config.data.path = "/data/my-own-faces"
    model.save(d)
    assert main(["card", str(d), "--license", "cc-by-4.0"]) == 0
    card = capsys.readouterr().out
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0" and "license_name" not in meta
    assert "facediff does not know it" in card  # the data's licence, unknown
    assert "set the Hub's licence field to `cc-by-4.0`" in card
    assert "Nothing was measured for this card" in card
    assert "| against |" not in card
    assert "not known: this card was made from a model without its run" in card
    assert "Steps:** not recorded" in card
    assert 'facediff.load("user/name")' in card  # no --repo: the placeholder


def test_a_conditional_model_with_a_custom_pipeline(tmp_path: Path):
    """The diffusers call asks for remote code only where model_index.json's class is a file
    of the repo ([module, class]); the facediff calls show an attribute."""
    tiny_model(True).save(tmp_path / "cond")
    model, run = load_for_card(str(tmp_path / "cond"))
    assert run is None
    custom = model_card(model, CardInputs("a/b"), {"_class_name": ["facediff_pipeline",
                                                                  "FacediffPipeline"]})
    assert 'DiffusionPipeline.from_pretrained("a/b", trust_remote_code=True)' in custom
    assert "--attr Smiling=1" in custom and 'attrs={"Smiling": 1}' in custom
    assert "hair (categorical: blond, dark, red)" in custom
    plain = model_card(model, CardInputs("a/b"), {"_class_name": "DDPMPipeline"})
    assert "trust_remote_code" not in plain
    assert "DiffusionPipeline" not in model_card(model, CardInputs("a/b"), None)


def test_the_training_record_stops_at_the_weights_step(run_dir: Path):
    whole = read_training(run_dir)
    assert whole.seconds == pytest.approx(900 + 1600) and len(whole.sessions) == 2
    first = read_training(run_dir, 60)  # the second session began at step 60: not counted
    assert first.seconds == pytest.approx(900) and len(first.sessions) == 1
    assert first.eval_step == 60 and first.eval_row["fid"] == pytest.approx(55.5)
    assert read_training(run_dir.parent / "no-such-run").seconds is None


@pytest.mark.parametrize("path, source, dataset", [
    ("../shared/datasets/celeba-6k", "auto", "CelebA"),
    ("celebahq-64", "auto", "CelebA-HQ (made from CelebA)"),
    ("/home/a/data/CelebA-HQ/", "auto", "CelebA-HQ (made from CelebA)"),
    ("jlbaker361/anime_faces_dim_128_50k", "hf", "the Kaggle Anime Face Dataset"),
    ("/data/faces", "utkface", "UTKFace"),
    ("../shared/datasets/mnist", "auto", "MNIST"),
    ("/data/simpsons/cropped", "auto", None),
    ("/root/data/celebahq128/train", "auto", "CelebA-HQ (made from CelebA)"),  # a split
    (None, "auto", None),
])
def test_known_datasets_are_recognised_by_name(path: str | None, source: str,
                                               dataset: str | None):
    found = data_licence(DataConfig(path=path, source=source))
    assert found.dataset == dataset
    assert (found.license_name is not None) == (dataset is not None)


def test_a_conditional_model_stages_its_pipeline_file_and_classifier(tmp_path: Path):
    """The staged repo of an attribute model holds FacediffPipeline and, in facediff/, the
    classifier it ships (what `sample --like` reads), so the Hub copy loads whole."""
    from facediff.assets import ASSETS
    from facediff.hub.push import stage

    model_dir = tmp_path / "cond"
    tiny_model(True).save(model_dir)
    shutil.copytree(ASSETS / "celeba-attrs-32" / "classifier", model_dir / "classifier")
    model = facediff.load(model_dir, device="cpu", precision="fp32")
    staged = stage(model, tmp_path / "stage", CardInputs("a/b"))
    files = {name for name, _ in staged.files}
    assert {"facediff_pipeline.py", "model_index.json", "unet/config.json",
            "facediff/weights.safetensors", "facediff/classifier/classifier.json",
            "facediff/classifier/weights.safetensors", "README.md"} <= files
    back = facediff.load(tmp_path / "stage", device="cpu", precision="fp32")
    assert back.path == tmp_path / "stage" / "facediff"
