"""Train one piece of a release model (issue 21; docs/training-plan.md), whatever the machine
kept: resume its run dir, or warm-start from the export committed in the repo if the run dir
is gone or behind it, then export the piece back into the repo.

    python bench/piece.py celebahq-64 --minutes 120
    python bench/piece.py anime-64 --minutes 120 --threads 1   # two pieces side by side
    python bench/piece.py ae-128 --minutes 60 --threads 1      # the 128 px autoencoder

Steps:
1. The data split (bench/split.py, deterministic) is made if it is missing.
2. Which start has seen more images: the run dir (~/runs/RUN: its newest checkpoint) or the
   committed export (exports/MODEL: its recorded step, plus the images its own start had
   seen). The run dir wins a tie: it has the optimizer state and resumes exactly. A run dir
   that is behind is moved aside (RUN.behind-DATE), not deleted.
3. `facediff train` for --minutes (`--time-limit`: it checkpoints and exports at the end),
   at nice 19 with --threads OpenMP threads.
4. `facediff export RUN --out exports/MODEL --half` (a shipped `classifier/` in it is
   kept): commit that folder (8-25 MB of fp16 weights; never the checkpoints), so the next
   session can go on even on a new machine.
Prints the images seen before and after; add the row to docs/training-plan.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from facediff.config import Config
from facediff.train import checkpoint as ck
from facediff.train.lock import RunLock, RunLockedError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
DATA = Path("~/data").expanduser()
RUNS = Path("~/runs").expanduser()

AE128 = REPO / "exports" / "ae-128"
ATTRS = "Male,Smiling,Eyeglasses,Young,Blond_Hair,Black_Hair,Bangs,Wearing_Hat"


@dataclass
class Plan:
    """How one release model trains: its run dir, its data and the train arguments.
    ``held_out``: bench/split.py's --n, into ~/data/SPLIT; None: the dataset's own split."""

    run: str
    dataset: str
    extra: list[str]
    held_out: int | None = None
    split: str = ""
    # an autoencoder (`facediff autoencoder train`) is committed in fp32: a latent model
    # warm-started later must find the very autoencoder (its digest) it was trained on
    autoencoder: bool = False


MODELS = {
    # celebahq-128's close crops: photos are aligned to its own mean face (facediff.faces)
    "celebahq-64": Plan("pixel64", "celebahq-128", [
        "--preset", "pixel64", "--set", "data.face_template=celebahq"], 2000, "celebahq128"),
    "anime-64": Plan("anime64", "anime-faces-64", ["--preset", "pixel64"], 1500, "anime64"),
    # the official train split (4,560 of the 6,000), the 8 attributes of celeba-attrs-32
    "celeba-attrs-64": Plan("celeba-attrs64", "celeba-6k", [
        "--preset", "pixel64", "--set", "data.split=train", "--set", f"data.conditions={ATTRS}"]),
    # the first stage of the 128 px latent model (preset ae128: 64 px crops of 128 px faces)
    "ae-128": Plan("ae128", "celebahq-128", ["--preset", "ae128"], 2000, "celebahq128",
                   autoencoder=True),
    # the 128 px latent models, on the frozen exports/ae-128 (fp32, committed): any change
    # to that autoencoder (its digest) starts their U-Nets anew
    # slim since 2026-12-02 (7th), like utkface-128 below: at the same CPU time the slim
    # utkface-128 (274k images) scored held-out FID 78.2 against the full width's 102.2 (55k)
    "celebahq-128": Plan("hq128s", "celebahq-128", [
        "--preset", "latent128", "--autoencoder", str(AE128), "--set", "data.hflip=false",
        "--set", "data.face_template=celebahq",
        "--set", "model.block_out_channels=[32,64,128]"], 2000, "celebahq128"),
    # age bins, gender and race from the file names; a seeded 10% (967 of 9,674) held out.
    # A third of latent128's width (3.57 M parameters, 7 MB in fp16; 2026-12-02, 6th): two
    # full-width 128 px models (24 MB each) break the 60 MB budget of the five bundled ones,
    # and on one AMD thread it trains 2.9x as many images a minute (47.7 against 16.5 img/s)
    "utkface-128": Plan("utk128s", "utkface", [
        "--preset", "latent128", "--autoencoder", str(AE128),
        "--set", "model.block_out_channels=[32,64,128]"], 967, "utkface"),
}


def images_seen(cfg: Config, step: int) -> int:
    """The images a model's weights have seen over all its pieces."""
    return cfg.train.init_images + step * cfg.train.batch_size


def run_images(run: Path) -> int | None:
    latest = ck.list_checkpoints(run)
    if not latest or not (run / "config.yaml").is_file():
        return None
    return images_seen(Config.load(run / "config.yaml"), latest[-1][0])


def export_images(export: Path) -> int | None:
    if not ck.is_exported_model(export):
        return None
    return images_seen(Config.load(export / "config.yaml"), ck.exported_step(export) or 0)


def yield_cpu() -> None:
    """Let work in other sessions go first. ``nice`` alone does not do that on Linux with
    autogroup scheduling (sched_autogroup_enabled, on by default): a process started under
    setsid/nohup is its own group, which the scheduler weighs equally with the shell's, so a
    nice-19 trainer still took half the CPU from tests beside it (seen 2026-12-02: pytest got
    50% of a core beside two such trainers, 93% once their group was niced). The group's own
    nice (/proc/self/autogroup) fixes that; where it is missing, this does nothing."""
    try:
        Path("/proc/self/autogroup").write_text("19")
    except OSError:
        pass


def facediff(*args: str, env: dict[str, str]) -> int:
    cmd = ["nice", "-n", "19", sys.executable, "-m", "facediff", *args]
    print("$", " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, env=env).returncode


def copy_export(run: Path, export: Path) -> int:
    """An autoencoder run's own export (RUN/model, fp32) copied whole into exports/MODEL."""
    import shutil

    from facediff.atomic import publish_dir

    tmp = export.with_name(f".tmp-{export.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / ck.EXPORT_DIR, tmp)
    publish_dir(tmp, export)
    print(f"copied {run / ck.EXPORT_DIR} to {export}")
    return 0


def export_keeping_classifier(run: Path, export: Path, env: dict[str, str]) -> int:
    """``facediff export RUN --out exports/MODEL --half``, keeping the attribute classifier
    committed beside the model (``exports/MODEL/classifier/``), which the export's
    whole-folder replacement would drop."""
    import shutil
    import tempfile

    clf = export / "classifier"
    with tempfile.TemporaryDirectory() as tmp:
        kept = Path(tmp) / "classifier"
        if clf.is_dir():
            shutil.copytree(clf, kept)
            if not ck.is_exported_model(export):  # only the classifier (a new architecture):
                shutil.rmtree(export)  # `facediff export` refuses a folder that is not a model
        code = facediff("export", str(run), "--out", str(export), "--half", env=env)
        if kept.is_dir() and not clf.is_dir():
            shutil.copytree(kept, clf)
    return code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--minutes", type=float, required=True, help="the piece's --time-limit")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    args = p.parse_args()
    plan = MODELS[args.model]
    run, export = RUNS / plan.run, REPO / "exports" / args.model
    data = DATA / plan.split / "train" if plan.held_out else SHARED / plan.dataset
    if plan.held_out and not data.is_dir() and not args.dry_run:
        subprocess.run([sys.executable, str(REPO / "bench" / "split.py"), "--data",
                        str(SHARED / plan.dataset), "--out", str(data.parent),
                        "--n", str(plan.held_out)], check=True)
    if run.is_dir() and not args.dry_run:
        try:  # a trainer at work in it (this script started twice): leave it alone
            with RunLock(run):
                pass
        except RunLockedError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    have_run, have_export = run_images(run), export_images(export)
    command = ["autoencoder", "train"] if plan.autoencoder else ["train"]
    train = [*command, "--data", str(data), "--out", str(run),
             "--time-limit", f"{args.minutes:g}", "--no-progress"]
    if have_run is not None and (have_export is None or have_run >= have_export):
        print(f"resuming {run}: {have_run:,} images seen")
    elif have_export is not None:
        print(f"starting from {export}: {have_export:,} images seen"
              + (f" (the run dir had {have_run:,})" if have_run is not None else ""))
        if run.exists() and not args.dry_run:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = run.with_name(f"{run.name}.behind-{stamp}")
            run.rename(aside)
            print(f"moved the run dir that was behind to {aside}")
        train += ["--init", str(export)]
    else:
        print(f"starting {args.model} from scratch in {run}")
    train += plan.extra
    if args.dry_run:
        print("$ facediff", " ".join(train))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    yield_cpu()
    code = facediff(*train, env=env)
    if code not in (0, 130) or not ck.is_exported_model(run / ck.EXPORT_DIR):
        print(f"training ended with exit code {code}; nothing exported", file=sys.stderr)
        return code or 1
    code = copy_export(run, export) if plan.autoencoder else \
        export_keeping_classifier(run, export, env)
    if code == 0:
        print(f"{args.model}: {export_images(export) or 0:,} images seen; commit {export}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
