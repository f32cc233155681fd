"""Progressive distillation (facediff distill) on tiny data: the target's arithmetic against
diffusers' DDIM step, the command end to end (export, `facediff sample` with no flags), exact
resume across round boundaries, the student's quality against its teacher's, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import facediff
import facediff.config
from facediff.cli import main
from facediff.config import Condition, DiffusionConfig
from facediff.diffusion.objectives import predicted_x0
from facediff.diffusion.sampling import make_scheduler
from facediff.train import checkpoint as ck
from facediff.train.distill import (
    ddim_step,
    distill,
    distill_config,
    distill_target,
    guided,
    landing_alpha_bar,
    load_teacher,
    make_rounds,
    predicted_eps,
)
from facediff.train.trainer import train
from tests.conftest import assert_one_line_exit_2, tiny_config
from tests.test_train import _tensors

# the tiny teacher's training (~15 s): its samples have faces' outline and colours (120 steps
# gave coloured blobs), and its 2- and 16-step DDIM samples differ
TEACHER_STEPS = 400
PER_ROUND = 60  # the CLI student: 16 -> 8 -> 4 -> 2 steps, 60 optimizer steps per round
# the default precision (accelerate's state is per process: every in-process trainer of the
# suite must keep the same one; bf16 on this CPU, deterministic, so resume is still exact);
# metrics rows rare enough that the loss blow-up guard (5x the best logged loss) is not
# fooled by single 8-image batches; a fine-tuning learning rate (the teacher's 2e-3 left the
# student twice as far from the teacher's 16 steps)
DISTILL = ["train.log_every=10", "train.lr=5e-4"]


def _set(options: list[str]) -> list[str]:
    return [a for o in options for a in ("--set", o)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One thread (the module's budget is measured so; two, on a busy 2-core machine, made a
    step some 25x slower), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def teacher(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = tiny_config(faces_dir, f"train.max_steps={TEACHER_STEPS}")
    assert train(cfg, run, progress=False).reason == "finished"
    return run


@pytest.fixture(scope="module")
def student(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("student") / "run"
    assert main(["distill", str(teacher), "--steps", "2", "--out", str(out),
                 "--steps-per-round", str(PER_ROUND), "--no-progress", "-q",
                 *_set(DISTILL)]) == 0
    return out


# ---- the arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_ddim_step_is_the_samplers_and_an_exact_teacher_gives_x0(prediction: str):
    diffusion = DiffusionConfig(prediction=prediction)
    g = torch.Generator().manual_seed(0)
    # one DDIM step per row equals diffusers' DDIMScheduler.step, which `facediff sample` runs
    sched = make_scheduler("ddim", diffusion, 16, clip_sample=False)
    for t in sched.timesteps:
        if prediction == "eps" and sched.alphas_cumprod[t] < 1e-8:
            continue  # x0 = (z - sigma eps) / alpha: predicted_x0 guards alpha ~ 0 (t = 999)
        z, pred = torch.randn((2, 3, 4, 4), generator=g), torch.randn((2, 3, 4, 4), generator=g)
        tt = t.repeat(2)
        abar = sched.alphas_cumprod[tt].reshape(-1, 1, 1, 1)
        mine = ddim_step(predicted_x0(pred, z, abar, prediction),
                         predicted_eps(pred, z, abar, prediction), landing_alpha_bar(sched, tt))
        theirs = sched.step(pred, int(t), z).prev_sample
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5), int(t)
    # a teacher that knows x0 makes x0 the target, in every round down to one step
    cfg = tiny_config(None, f"diffusion.prediction={prediction}", "distill.steps=1")
    x0 = torch.rand((6, 3, 4, 4), generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    for rnd in make_rounds(cfg):
        i = torch.arange(6) % rnd.n
        abar = rnd.student.alphas_cumprod[rnd.student.timesteps[i]].reshape(-1, 1, 1, 1)
        z = abar.sqrt() * x0 + (1 - abar).sqrt() * eps

        def exact(z: torch.Tensor, t: torch.Tensor, rnd=rnd) -> torch.Tensor:
            a = rnd.teacher.alphas_cumprod[t].reshape(-1, 1, 1, 1)
            e = (z - a.sqrt() * x0) / (1 - a).sqrt()
            return e if prediction == "eps" else a.sqrt() * e - (1 - a).sqrt() * x0

        target = distill_target(exact, z, i, rnd, prediction=prediction)
        keep = abar.flatten() >= (1e-8 if prediction == "eps" else 0)  # as above
        assert torch.allclose(target[keep], x0[keep], atol=2e-3), \
            (rnd.n, (target - x0)[keep].abs().max())


def test_guidance_is_distilled_in_for_conditional_teachers(faces_dir: Path):
    from facediff.model import build_net

    cfg = tiny_config(faces_dir, "sample.guidance=2.5")
    cfg.conditions = [Condition("Smiling")]
    made = distill_config(cfg, digest="0" * 64, steps=2, steps_per_round=5)
    assert made.distill.guidance == 2.5 and made.sample.guidance == 1.0
    assert made.data.conditions == ["Smiling"]  # the teacher's, whatever the labels offer
    assert (made.sample.sampler, made.sample.steps, made.train.max_steps) == ("ddim", 2, 15)
    net = build_net(cfg).eval()
    z, t = torch.randn(3, 3, 16, 16), torch.tensor([999, 500, 20])
    labels = torch.tensor([[1], [0], [-1]])
    with torch.no_grad():
        c = net(z, t, labels).sample
        u = net(z, t).sample
        assert torch.allclose(guided(net, labels, 2.5)(z, t), u + 2.5 * (c - u), atol=1e-5)
        assert torch.allclose(guided(net, labels, 1.0)(z, t), c)


# ---- the command ---------------------------------------------------------------------------

def test_distill_exports_a_ddim_model_that_samples_with_no_flags(student: Path, teacher: Path,
                                                                 tmp_path: Path, capsys):
    cfg, _, _ = ck.read_model(student / "model")
    assert cfg.task == "diffusion"
    assert (cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta) == ("ddim", 2, 0.0)
    d = cfg.distill
    assert (d.start_steps, d.steps, d.steps_per_round) == (16, 2, PER_ROUND)
    assert d.teacher == str(teacher.resolve()) and len(d.teacher_digest) == 64
    assert cfg.train.max_steps == 3 * PER_ROUND
    assert ck.exported_step(student / "model") == 3 * PER_ROUND
    assert (student / "samples" / f"step-{3 * PER_ROUND:07d}.png").is_file()
    state = torch.load(ck.latest_checkpoint(student) / "state.pt", weights_only=True)
    assert state["distill_round"] == 2 and state["distill_teacher"]
    out = tmp_path / "s"
    capsys.readouterr()
    assert main(["sample", str(student), "--n", "4", "--out", str(out), "--no-progress"]) == 0
    assert "ddim, 2 steps" in capsys.readouterr().out
    assert len(list(out.glob("sample_*.png"))) == 4
    # the same command again resumes: here, a finished run, so nothing more to do
    assert main(["distill", str(teacher), "--steps", "2", "--out", str(student),
                 "--steps-per-round", str(PER_ROUND), "--no-progress", "-q",
                 *_set(DISTILL)]) == 0
    text = capsys.readouterr().out
    assert f"finished at step {3 * PER_ROUND}" in text and "facediff sample" in text


def test_distillation_resumes_bit_exactly_across_round_boundaries(teacher: Path,
                                                                   tmp_path: Path):
    tcfg, weights, digest = load_teacher(teacher)
    # 16 -> 8 -> 4 -> 2 in 3 steps a round: the pause (step 4) falls in round 2, whose teacher
    # comes from the checkpoint; the resumed run crosses the boundary at step 6
    cfg = distill_config(tcfg, digest=digest, steps=2, steps_per_round=3,
                         teacher_name=str(teacher),
                         overrides=[*DISTILL, "train.checkpoint_every=2", "train.grad_accum=2",
                                    "data.val_fraction=0.25", "train.val_every=2"])
    straight = distill(cfg, tmp_path / "a", teacher=weights, progress=False)
    paused = distill(cfg, tmp_path / "b", teacher=weights, progress=False, until_step=4)
    assert paused.reason == "paused" and paused.step == 4
    assert ck.latest_checkpoint(tmp_path / "b").name == "step-0000004"
    resumed = distill(cfg, tmp_path / "b", teacher=weights, progress=False)
    assert straight.step == resumed.step == 9
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    for run, tensors in ((tmp_path / "a", a), (tmp_path / "b", b)):
        state = torch.load(ck.latest_checkpoint(run) / "state.pt", weights_only=True)
        assert state["distill_round"] == 2
        tensors.update({f"teacher.{k}": v for k, v in state["distill_teacher"].items()})
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_student_in_2_steps_is_closer_to_the_teachers_16_than_the_teacher_in_2(
        teacher: Path, student: Path):
    """Metric: mean squared error in [-1, 1] pixels against the teacher's 16-step eta-0 DDIM
    samples, from the same initial noise (64 seeds). Pass: the student's 2-step samples score
    below half the teacher's own 2-step samples, and below a quarter of the error of the
    average sample (so the student reproduces each sample, not a blur)."""
    t = facediff.load(teacher, device="cpu", precision="fp32")
    s = facediff.load(student, device="cpu", precision="fp32")

    def ddim(model: facediff.FaceModel, steps: int) -> torch.Tensor:
        return model.sample_tensor(64, steps=steps, sampler="ddim", eta=0.0, seed=0,
                                   batch_size=64).float() / 127.5 - 1

    ref = ddim(t, 16)
    teacher_mse = float((ddim(t, 2) - ref).pow(2).mean())
    student_mse = float((ddim(s, 2) - ref).pow(2).mean())
    blur_mse = float((ref - ref.mean(0, keepdim=True)).pow(2).mean())
    print(f"vs teacher 16 steps: teacher 2 steps {teacher_mse:.4f}, student 2 steps "
          f"{student_mse:.4f}, average sample {blur_mse:.4f}")
    assert teacher_mse > 0.02  # the 2-step teacher is far from its 16 steps: a gap to close
    assert student_mse < 0.5 * teacher_mse
    assert student_mse < 0.25 * blur_mse


def test_photos_are_edited_by_the_original_teacher(teacher: Path, student: Path,
                                                   tmp_path: Path):
    """A few-step student cannot invert a photo over an edit's many steps: load_editor gives
    its teacher, back through a chain of distillations; without a teacher, the model itself."""
    from facediff.api import load_editor

    t = facediff.load(teacher, device="cpu", precision="fp32")
    assert load_editor(t) is t  # not distilled: edits with itself
    s = facediff.load(student, device="cpu", precision="fp32")
    editor = load_editor(s)
    assert editor is not s and editor.precision == "fp32"
    want = ck.read_model(teacher)[0]
    assert editor.config.distill.teacher_digest is None
    assert editor.config.train.max_steps == want.train.max_steps == TEACHER_STEPS
    # the app says what the distilled model is and who edits photos
    from facediff.app.logic import Session

    note = Session(s, out_dir=tmp_path / "app", editor=editor).note
    assert "2 DDIM steps" in note and "edited by its teacher" in note and "Guidance" not in note
    assert Session(t, out_dir=tmp_path / "app2").note == ""
    # a student of the student (its config names the first student as its teacher)
    chained = tmp_path / "chained"
    shutil.copytree(student / "model", chained)
    cfg = facediff.config.Config.load(chained / "config.yaml")
    cfg.distill.teacher = str(student)
    (chained / "config.yaml").write_text(cfg.to_yaml())
    assert load_editor(facediff.load(chained)).config.train.max_steps == TEACHER_STEPS
    # a teacher that is not on this machine: the student edits with itself
    cfg.distill.teacher = str(tmp_path / "elsewhere")
    (chained / "config.yaml").write_text(cfg.to_yaml())
    lone = facediff.load(chained)
    assert load_editor(lone) is lone


# ---- bad input -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_models(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An autoencoder export and a teacher with other weights (same network)."""
    root = tmp_path_factory.mktemp("others")
    cfg, weights, _ = ck.read_model(teacher)
    ck.export_model(root / "other", cfg, {k: v + 1e-3 for k, v in weights.items()})
    ae = tiny_config(None, "task=autoencoder", "autoencoder.kind=tiny")
    ck.export_model(root / "ae", ae, {"x": torch.zeros(1)})
    return root


@pytest.mark.parametrize("args, fragment", [
    (["distill", "{tmp}/missing", "--steps", "2", "--out", "{tmp}/o"], "model not found"),
    (["distill", "{others}/ae", "--steps", "2", "--out", "{tmp}/o"], "is an autoencoder"),
    (["distill", "{teacher}", "--steps", "3", "--out", "{tmp}/o"],
     "--steps must be a power of two"),
    (["distill", "{teacher}", "--steps", "16", "--out", "{tmp}/o"],
     "--steps 16 must be below --start-steps 16"),
    (["distill", "{teacher}", "--steps", "4", "--start-steps", "2", "--out", "{tmp}/o"],
     "must be below --start-steps 2"),
    (["distill", "{teacher}", "--steps", "2", "--out", "{tmp}/o", "--data", "{tmp}/missing"],
     "data folder not found"),
    (["distill", "{teacher}", "--steps", "2", "--out", "{tmp}/o", "--max-steps", "10"],
     "multiple of the 3 rounds"),
    (["distill", "{teacher}", "--steps", "2", "--out", "{teacher}"], "not a distillation"),
    (["train", "--out", "{student}", "--no-progress"], "use facediff distill"),
    (["distill", "{others}/other", "--steps", "2", "--out", "{student}"],
     "different teacher"),
    (["distill", "{teacher}", "--steps", "2", "--out", "{student}", "--start-steps", "8"],
     "cannot resume with a different distillation"),
])
def test_bad_input_is_one_line_and_exit_2(teacher: Path, student: Path, other_models: Path,
                                          tmp_path: Path, capsys, args, fragment):
    where = {"{tmp}": tmp_path, "{teacher}": teacher, "{student}": student,
             "{others}": other_models}
    for key, path in where.items():
        args = [a.replace(key, str(path)) for a in args]
    assert_one_line_exit_2([*args, "--no-progress", "-q"] if args[0] == "distill" else args,
                           capsys, fragment)
