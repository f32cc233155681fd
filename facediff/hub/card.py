"""Model cards: the ``README.md`` a Hugging Face model repo shows, generated from a model and,
where it has one, its run (``facediff card``, ``facediff push``).

The card is YAML front matter (licence, ``library_name: diffusers``, tags, pipeline tag) and
the sections of the bundled models' hand-written cards: Use, Licence and intended use, Data,
Architecture, Training, Sampling, Evaluation, Files. Every fact comes from what was recorded:

* the model's config (data, network, diffusion, optimiser, sampler; the whole config.yaml
  folded at the end of Training);
* the run's ``logs/machines.jsonl`` (one line per training session: its start time, step,
  device, processes, precision) and ``logs/metrics.csv`` (a row every ``train.log_every``
  steps with its time, speed and, with ``train.eval_every``, FID against the training data):
  the training device, the wall time and the speed;
* score files given with ``--scores`` (``facediff eval``'s results.json,
  ``bench/release_eval.py``'s summary.json), rendered with what they were measured against
  and on how many samples;
* the training data's licence, where the data's name is one facediff knows.

What was not recorded (a model dir without its run, a run older than machines.jsonl, no
scores) the card says it does not know; it never fills in a number.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from facediff.config import Config, DataConfig
from facediff.errors import FacediffError

if TYPE_CHECKING:
    from facediff.api import FaceModel

PLACEHOLDER_REPO = "user/name"  # in the card's calls when no repo id is known yet
RUN_MARKERS = ("checkpoints", "logs")  # beside config.yaml, what makes a folder a run dir


# ---- the data's licence -------------------------------------------------------------------

@dataclass(frozen=True)
class DataLicence:
    """What the card says about the training data's terms and puts in the Hub's licence
    fields (``license``, and for ``other`` a ``license_name`` and ``license_link``)."""

    dataset: str | None  # the dataset recognised from the data's name; None: unknown
    license: str = "other"
    license_name: str | None = None
    license_link: str | None = None


# (words in the data's name, the dataset, the Hub licence name, its page); the first that
# matches wins, so CelebA-HQ comes before CelebA. All of these allow non-commercial research
# use only (../shared/datasets/README.md), and the card says so.
_KNOWN: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("celebahq", "celeba-hq", "celeba_hq"), "CelebA-HQ (made from CelebA)",
     "celeba-non-commercial-research", "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    (("celeba",), "CelebA", "celeba-non-commercial-research",
     "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    (("utkface", "utk-face", "utk_face"), "UTKFace", "utkface-non-commercial-research",
     "https://susanqq.github.io/UTKFace/"),
    (("anime",), "the Kaggle Anime Face Dataset", "anime-faces-non-commercial-research",
     "https://www.kaggle.com/datasets/splcher/animefacedataset"),
    (("mnist",), "MNIST", "mnist-non-commercial-research", "https://yann.lecun.com/exdb/mnist/"),
)
# data.source values that name a dataset by themselves
_SOURCES = {"celeba": "celeba", "utkface": "utkface", "mnist": "mnist"}


def data_name(data: DataConfig) -> str:
    """The last part of the data's path or Hub name, lower case (``../data/celeba-6k/`` ->
    ``celeba-6k``; ``owner/name:config`` -> ``name``); empty when there is none."""
    text = (data.path or "").strip().replace("\\", "/").rstrip("/")
    return text.rsplit("/", 1)[-1].split(":")[0].lower()


def data_licence(data: DataConfig) -> DataLicence:
    """The licence facts of the data a model was trained on: a known dataset (by the name of
    its folder or Hub repo, or by ``data.source``), else unknown (``DataLicence(None)``)."""
    # the folder and the two above it: a split of a dataset (``~/data/celebahq128/train``)
    # keeps the dataset's name a level up
    parts = (data.path or "").strip().replace("\\", "/").rstrip("/").split("/")
    name = "/".join([*parts[-3:-1], data_name(data)]).lower()
    by_source = _SOURCES.get(data.source)
    for words, dataset, hub_name, link in _KNOWN:
        if any(w in name for w in words) or (by_source is not None and by_source in words):
            return DataLicence(dataset, "other", hub_name, link)
    return DataLicence(None)


# ---- what the run recorded ----------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    """One training session of a run (a line of ``logs/machines.jsonl``)."""

    time: float
    step: int
    device: str
    name: str
    processes: int
    precision: str

    def machine(self) -> str:
        """``NVIDIA H200 (cuda), 1 process, mixed precision bf16``."""
        procs = f"{self.processes} process{'es' if self.processes != 1 else ''}"
        text = f"{self.name} ({self.device}), {procs}"
        if self.precision == "no":
            return f"{text}, no mixed precision (fp32)"
        return f"{text}, mixed precision {self.precision}" if self.precision else text


@dataclass
class Training:
    """What a run recorded about its training up to the weights being carded."""

    sessions: list[Session] = field(default_factory=list)
    seconds: float | None = None  # wall time, from each session's start to its last row
    img_per_s: float | None = None  # the median of the logged speeds
    eval_row: dict[str, float] | None = None  # the last in-training eval (FID, ...)
    eval_step: int | None = None


def find_run(path: str | Path) -> Path | None:
    """The run dir behind a model path: the path itself when it is a run dir (config.yaml
    beside checkpoints/ or logs/), its parent when it is a run's export (RUN/model), else
    None (a model dir on its own, a bundled name, a Hub id)."""
    from facediff.train.checkpoint import EXPORT_DIR

    p = Path(path).expanduser()

    def is_run(d: Path) -> bool:
        return (d / "config.yaml").is_file() and any((d / m).is_dir() for m in RUN_MARKERS)

    if p.is_dir() and is_run(p):
        return p
    if p.name == EXPORT_DIR and is_run(p.parent):
        return p.parent
    return None


def _float(text: object) -> float | None:
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sessions(path: Path) -> list[Session]:
    out: list[Session] = []
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
            out.append(Session(float(d["time"]), int(d.get("step", 0)), str(d.get("device", "?")),
                               str(d.get("name") or d.get("device", "?")),
                               int(d.get("processes", 1)), str(d.get("precision", ""))))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash
    return sorted(out, key=lambda s: s.time)


def _metric_rows(path: Path) -> list[dict[str, float]]:
    """metrics.csv as written (every row, resumed parts included: their time was spent)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", errors="replace") as f:
        for raw in csv.DictReader(f):
            row = {k: v for k, v in ((k, _float(x)) for k, x in raw.items() if k) if v is not None}
            if "step" in row:
                rows.append(row)
    return rows


def read_training(run: str | Path, step: int | None = None) -> Training:
    """What ``run`` recorded about training up to ``step`` (None: all of it): its sessions
    (``logs/machines.jsonl``), the wall time (each session's start to its last logged row
    before the next session), the median logged speed and the last in-training evaluation
    (``logs/metrics.csv``). Missing files give empty fields, never guesses."""
    from facediff.train.trainer import MACHINES

    logs = Path(run) / "logs"
    sessions = _sessions(logs / MACHINES)
    if step is not None:  # sessions that began at or after these weights added nothing
        sessions = [s for s in sessions if s.step < step] or sessions[:1]
    rows = [r for r in _metric_rows(logs / "metrics.csv") if step is None or r["step"] <= step]
    t = Training(sessions=sessions)
    if sessions and any("time" in r for r in rows):
        total, counted = 0.0, False
        for i, s in enumerate(sessions):
            end = sessions[i + 1].time if i + 1 < len(sessions) else math.inf
            times = [r["time"] for r in rows if "time" in r and s.time <= r["time"] < end]
            if times:
                total, counted = total + max(times) - s.time, True
        t.seconds = total if counted else None
    speeds = [r["img_per_s"] for r in rows if r.get("img_per_s", 0) > 0]
    t.img_per_s = statistics.median(speeds) if speeds else None
    evals = [r for r in rows if "fid" in r]
    if evals:
        last = evals[-1]
        t.eval_step = int(last["step"])
        t.eval_row = {k: last[k] for k in ("fid", "kid", "precision", "recall") if k in last}
        if "eval_n" in last:
            t.eval_row["n"] = last["eval_n"]
    return t


def load_for_card(path: str) -> tuple[FaceModel, Path | None]:
    """The model ``path`` names, on the CPU in float32, and its run dir (None: none). A run
    dir gives its export (RUN/model, what the run handed over) where it has one, else its
    newest checkpoint's EMA weights, as every command reads a run."""
    from facediff.api import load
    from facediff.train.checkpoint import EXPORT_DIR, is_exported_model

    p = Path(path).expanduser()
    run = find_run(p) if p.exists() else None
    target: str | Path = path
    if run is not None and p.resolve() == run.resolve() and is_exported_model(run / EXPORT_DIR):
        target = run / EXPORT_DIR
    return load(target, device="cpu", precision="fp32"), run


def licence_conflict(data: DataConfig, license: str | None) -> str | None:
    """A warning when ``license`` (the Hub licence the user chose) allows more than the
    training data's licence, as far as facediff knows it; None when there is no conflict."""
    known = data_licence(data)
    if not license or not known.dataset or license == "other" or "-nc" in license:
        return None
    return (f"--license {license}: the training data looks like {known.dataset}, whose licence "
            "allows non-commercial research use only; the card says so")


# ---- measured scores ----------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreRow:
    """One measured row: what it was measured against (its split) and its numbers."""

    against: str
    values: dict[str, Any]


@dataclass
class Measured:
    """The scores given for a card: rows, and lines about sampling speed where measured."""

    rows: list[ScoreRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _split_spec(spec: str) -> tuple[str | None, Path]:
    """``LABEL=FILE`` or ``FILE``."""
    label, sep, rest = spec.partition("=")
    if sep and label and "/" not in label and not Path(spec).expanduser().exists():
        return label.strip(), Path(rest).expanduser()
    return None, Path(spec).expanduser()


def read_scores(specs: Sequence[str]) -> Measured:
    """Score files for a card, each ``FILE`` or ``LABEL=FILE`` (LABEL: what the scores were
    measured against, e.g. ``held-out``): ``facediff eval --out DIR``'s ``DIR/results.json``
    (a list of rows; the label defaults to DIR's name) or ``bench/release_eval.py``'s
    ``summary.json`` (rows by split: held-out, train, real vs real; its sampling times). A
    file that cannot be read or holds no scores is a ``FacediffError``."""
    out = Measured()
    for spec in specs:
        label, path = _split_spec(spec)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise FacediffError(f"cannot read the scores {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise FacediffError(f"{path} is not JSON: {e}") from None
        found: list[ScoreRow] = []
        if isinstance(data, list):  # facediff eval's results.json
            found = [ScoreRow(label or path.parent.name or path.stem, r)
                     for r in data if isinstance(r, dict) and _float(r.get("fid")) is not None]
        elif isinstance(data, dict) and _float(data.get("fid")) is not None:
            found = [ScoreRow(label or path.parent.name or path.stem, data)]
        elif isinstance(data, dict):  # bench/release_eval.py's summary.json
            for k, v in data.items():
                if isinstance(v, dict) and _float(v.get("fid")) is not None:
                    found.append(ScoreRow(f"{label}: {k}" if label else k, v))
            s16, s1000 = _float(data.get("seconds_16")), _float(data.get("seconds_1000"))
            if s16 is not None and s1000 is not None:
                out.notes.append(f"Sampling time measured with the scores: 16 images in "
                                 f"{s16:.1f} s, 1,000 in {s1000:.0f} s (on the machine that "
                                 "measured them).")
        if not found:
            raise FacediffError(f"{path} holds no scores (expected facediff eval's "
                                "results.json or bench/release_eval.py's summary.json)")
        out.rows += found
    return out


# ---- the card -----------------------------------------------------------------------------

@dataclass
class CardInputs:
    """What a card is made from besides the model: the repo it is for (its calls name it), the
    run (None: none known), the scores, the Hub licence the user chose (None: the data's, or
    ``other``) and whether the weights are stored in float16."""

    repo_id: str | None = None
    run: Path | None = None
    measured: Measured = field(default_factory=Measured)
    license: str | None = None
    half: bool = False


def load_card_inputs(path: str, *, repo: str | None, scores: Sequence[str],
                     license: str | None, half: bool) -> tuple[FaceModel, CardInputs]:
    """What ``facediff card`` and ``facediff push`` start from: the model ``path`` names
    (``load_for_card``) and its card's inputs (its run, the ``scores`` files read, the
    licence, ``half``); a ``license`` that allows more than the known training data is
    logged as a warning."""
    import logging

    measured = read_scores(scores)
    model, run_dir = load_for_card(path)
    conflict = licence_conflict(model.config.data, license)
    if conflict:
        logging.getLogger("facediff").warning(conflict)
    return model, CardInputs(repo, run_dir, measured, license, half)


def hub_license(model: FaceModel, inputs: CardInputs) -> DataLicence:
    """The licence fields of the card's front matter: ``--license`` where given, else the
    data's (``other`` with a name and link for a known dataset, plain ``other`` else)."""
    known = data_licence(model.config.data)
    if inputs.license:
        return DataLicence(known.dataset, inputs.license)
    return known


def pipeline_index(model: FaceModel) -> dict[str, Any] | None:
    """The ``model_index.json`` of the model's diffusers export (written to a temporary folder
    and removed), or None where facediff cannot export this model to diffusers."""
    import logging
    import tempfile

    from facediff.hub.pipelines import INDEX, export_pipeline

    with tempfile.TemporaryDirectory(prefix="facediff-card-") as tmp:
        try:
            out = export_pipeline(model, Path(tmp) / "pipe")
        except FacediffError as e:
            logging.getLogger(__name__).warning("no diffusers pipeline in the card: %s", e)
            return None
        return json.loads((out / INDEX).read_text())


def model_card(model: FaceModel, inputs: CardInputs,
               index: dict[str, Any] | None = None) -> str:
    """The model card (README.md text) of ``model``: front matter and sections, from its
    config, ``inputs.run``'s logs and ``inputs.measured``; ``index``: the diffusers
    pipeline's model_index.json beside it in the repo (None: no pipeline)."""
    repo = inputs.repo_id or PLACEHOLDER_REPO
    training = read_training(inputs.run, model.step) if inputs.run is not None else None
    parts = [
        _front_matter(model, inputs),
        f"# {inputs.repo_id or model_name(model)}\n\n{_summary(model)}",
        _use(model, repo, index),
        _licence(model, inputs),
        _data(model.config),
        _architecture(model, inputs.half),
        _training(model, training),
        _sampling(model.config),
        _evaluation(inputs.measured, training),
        _files(index, inputs.half),
    ]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def model_name(model: FaceModel) -> str:
    """A short name for ``model``: its folder's (its run's for RUN/model), or a bundled name."""
    from facediff.train.checkpoint import EXPORT_DIR

    p = model.path or Path(model.source)
    if p.parent.name == "snapshots":  # a Hub download: models--owner--name/snapshots/<commit>
        return p.parent.parent.name.removeprefix("models--").replace("--", "/")
    return p.parent.name if p.name == EXPORT_DIR else p.name


def _kind(model: FaceModel) -> dict[str, bool]:
    return {"conditional": len(model.spec) > 0, "latent": bool(getattr(model.net, "latent", 0)),
            "distilled": bool(model.config.distill.teacher_digest)}


def _front_matter(model: FaceModel, inputs: CardInputs) -> str:
    lic = hub_license(model, inputs)
    kind = _kind(model)
    tags = ["facediff", "faces", "diffusion", "unconditional-image-generation"]
    tags += [t for t, on in (("attribute-control", kind["conditional"]),
                             ("latent-diffusion", kind["latent"]),
                             ("distillation", kind["distilled"])) if on]
    meta: dict[str, Any] = {"license": lic.license}
    if lic.license == "other" and lic.license_name:
        meta["license_name"] = lic.license_name
        meta["license_link"] = lic.license_link
    meta["library_name"] = "diffusers"
    meta["pipeline_tag"] = "unconditional-image-generation"
    meta["tags"] = tags
    data = model.config.data
    if data.source == "hf" and data.path and "/" in data.path and \
            not data.path.startswith((".", "/", "~")):
        meta["datasets"] = [data.path.split(":")[0]]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def _summary(model: FaceModel) -> str:
    cfg, kind = model.config, _kind(model)
    size = cfg.data.image_size
    colour = "RGB" if cfg.data.channels == 3 else "grayscale"
    if kind["conditional"]:
        names = ", ".join(c.name for c in cfg.conditions)
        what = f"A face generator with {len(cfg.conditions)} condition(s) under control " \
               f"({names})"
    else:
        what = "An unconditional face generator"
    text = f"{what}, {size}x{size} {colour}: a diffusion model trained with facediff."
    if kind["latent"]:
        text += " It is a latent diffusion model: its U-Net denoises an autoencoder's latents, " \
                "which the autoencoder (in the same weights) decodes to images."
    if kind["distilled"]:
        text += f" It was distilled from `{cfg.distill.teacher}` to sample in " \
                f"{cfg.distill.steps} DDIM steps (progressive distillation)."
    return text


def _example_attr(model: FaceModel) -> tuple[str, str] | None:
    """A condition and a value to show in the calls: (CLI ``NAME=VALUE``, Python dict)."""
    if not len(model.spec):
        return None
    c = model.config.conditions[0]
    value: int | str = 1 if c.kind == "binary" else c.values[0]
    return f"{c.name}={value}", json.dumps({c.name: value})


def _use(model: FaceModel, repo: str, index: dict[str, Any] | None) -> str:
    s = model.settings()
    attr = _example_attr(model)
    cli = [f"facediff sample {repo} -n 16 --out faces"]
    py = ["import facediff", "", f'model = facediff.load("{repo}")',
          "images = model.sample(n=16, seed=0)  # PIL images"]
    if attr:
        cli.append(f"facediff sample {repo} -n 16 --attr {attr[0]} --out faces-attr")
        py.append(f"images = model.sample(n=16, seed=0, attrs={attr[1]})")
    text = ["## Use", "", "With facediff (it reads its own export in `facediff/`):", "",
            "```bash", *cli, "```", "", "```python", *py, "```"]
    if index is None:
        text += ["", "This model has no diffusers pipeline: facediff cannot export this kind "
                 "of model to diffusers yet."]
        return "\n".join(text)
    remote = isinstance(index.get("_class_name"), list)
    args = f'"{repo}", trust_remote_code=True' if remote else f'"{repo}"'
    text += ["", "With diffusers alone (the pipeline at the repo's root"
             + (", whose pipeline class is a file in this repo: `trust_remote_code=True` runs "
                "it" if remote else "") + "):", "",
             "```python", "from diffusers import DiffusionPipeline", "",
             f"pipe = DiffusionPipeline.from_pretrained({args})",
             f"images = pipe(batch_size=16, num_inference_steps={s.steps}).images"]
    if attr:  # FacediffPipeline: attributes and classifier-free guidance
        text.append(f"images = pipe(batch_size=16, attributes={attr[1]}, guidance_scale="
                    f"{model.config.sample.guidance:g}, num_inference_steps={s.steps}).images")
    text.append("```")
    return "\n".join(text)


def _licence(model: FaceModel, inputs: CardInputs) -> str:
    data = model.config.data
    known = data_licence(data)
    where = f"`{data.path}`" if data.path else "not recorded in the config"
    if known.dataset:
        terms = (f"**Licence:** non-commercial research use only. The training data ({where}) "
                 f"is recognised by its name as {known.dataset}, whose licence allows "
                 f"non-commercial research use only ({known.license_link}); the same "
                 "restriction applies to these weights and to the images they generate.")
    else:
        terms = (f"**Licence:** the licence of the training data ({where}) applies to these "
                 "weights and to the images they generate; facediff does not know it. Check "
                 "it before you use or share the model.")
    if inputs.license:
        terms += f" The uploader set the Hub's licence field to `{inputs.license}`."
    lines = ["## Licence and intended use", "", f"- {terms}",
             "- **Intended use:** research on face generation, demos and teaching; a starting "
             "point for fine-tuning (`facediff train --init MODEL`).",
             "- **Not for:** identifying people, judging anyone's traits, or any decision about "
             "a person. Generated faces are not real people, but they can resemble training "
             "images.",
             "- **Known limits:** the model reproduces the skews of its training data (who is "
             "in it, how they are lit and posed)."]
    return "\n".join(lines)


def _data(cfg: Config) -> str:
    d = cfg.data
    known = data_licence(d).dataset
    source = f" (source: {d.source})" if d.source != "auto" else ""
    if d.path:
        dataset = f"`{d.path}`{source}" + (f", recognised as {known}" if known else "") + "."
    else:
        dataset = "not recorded in the config (images handed over in memory)."
    lines = ["## Data", "", f"- **Dataset:** {dataset}"]
    if d.split:
        lines.append(f"- **Split:** {d.split}")
    prep = f"resized to {d.image_size}x{d.image_size}" + (" (centre crop)" if d.center_crop
                                                          else "")
    prep += ", random horizontal flips" if d.hflip else ", no flips"
    lines.append(f"- **Images:** {prep}; {d.channels} channel(s).")
    if d.val_fraction:
        lines.append(f"- **Held out:** {d.val_fraction:.0%} of the images, for the "
                     "validation loss.")
    if cfg.conditions:
        conds = "; ".join(f"{c.name} ({c.kind}" + ("" if c.kind == "binary"
                                                    else f": {', '.join(c.values)}") + ")"
                          for c in cfg.conditions)
        lines.append(f"- **Conditions:** {conds}. Each can be left unspecified at sampling.")
    else:
        lines.append("- **Conditions:** none (unconditional).")
    return "\n".join(lines)


def _params(module: Any) -> str:
    """A parameter count: ``2.66 M``, or in full below 10,000 (``1,234``)."""
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.2f} M" if n >= 10_000 else f"{n:,} parameters"


_PREDICTION = {"eps": "epsilon (noise) prediction", "v": "v-prediction", "x0": "x0 prediction"}


def _architecture(model: FaceModel, half: bool) -> str:
    cfg, net = model.config, model.net
    m = cfg.model
    levels = ", ".join(map(str, m.attention_levels))
    if m.attention_levels:
        attn = f"self-attention at level(s) {levels}" + (
            " and in the middle block" if m.mid_attention else ", none in the middle block")
    else:
        attn = "self-attention only in the middle block" if m.mid_attention \
            else "no self-attention"
    lines = ["## Architecture", "",
             f"- diffusers `UNet2DModel`: channels {'-'.join(map(str, m.block_out_channels))}, "
             f"{m.layers_per_block} ResNet block(s) per level, {attn}, GroupNorm with "
             f"{m.norm_num_groups} groups, {m.resnet_time_scale_shift} time conditioning."]
    sizes = [f"U-Net {_params(net.unet)}"]
    if getattr(net, "cond", None) is not None:
        sizes.append(f"condition embedding {_params(net.cond)}")
    if getattr(net, "first_stage", None) is not None:
        sizes.append(f"autoencoder (frozen) {_params(net.first_stage)}")
    lines.append(f"- **Parameters:** {'; '.join(sizes)}.")
    if getattr(net, "first_stage", None) is not None:
        a = cfg.autoencoder
        f = 2 ** (len(a.block_out_channels) - 1)
        lines.append(f"- **First stage:** a `{a.kind}` autoencoder, {a.latent_channels} latent "
                     f"channels, {f}x smaller than the image per side.")
    d = cfg.diffusion
    weighting = f"Min-SNR-{d.snr_gamma:g}" if d.loss_weighting == "min_snr" else \
        "unweighted"
    lines.append(f"- **Diffusion:** {d.num_train_timesteps} training steps, "
                 f"{d.beta_schedule} noise schedule"
                 + (" (zero terminal SNR)" if d.rescale_zero_snr else "")
                 + f", {_PREDICTION.get(d.prediction, d.prediction)}, {weighting} loss "
                 "weighting.")
    dtype = "float16" if half else "float32"
    lines.append(f"- **Weights here:** the EMA weights, stored as {dtype} safetensors; "
                 "facediff loads them as float32.")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _training(model: FaceModel, t: Training | None) -> str:
    cfg = model.config
    tc = cfg.train
    lines = ["## Training", ""]
    if cfg.distill.teacher_digest:
        ds = cfg.distill
        lines.append(f"- **Distilled** from `{ds.teacher}`: progressive distillation from "
                     f"{ds.start_steps} to {ds.steps} DDIM steps, {ds.steps_per_round:,} "
                     "optimiser steps per halving.")
    if t is None:
        lines.append("- **Device and time:** not known: this card was made from a model "
                     "without its run (the run's logs/ record them).")
    else:
        machines: dict[str, int] = {}
        for s in t.sessions:
            machines[s.machine()] = machines.get(s.machine(), 0) + 1
        if machines:
            lines.append("- **Device:** " + "; ".join(
                f"{m}" + (f" ({n} sessions)" if n > 1 else "") for m, n in machines.items()))
        else:
            lines.append("- **Device:** not recorded (the run has no logs/machines.jsonl).")
        if t.seconds is not None:
            n = len(t.sessions)
            lines.append(f"- **Time:** {_duration(t.seconds)} of wall time"
                         + (f" over {n} sessions" if n > 1 else "")
                         + ", from each session's start to its last logged step.")
        else:
            lines.append("- **Time:** not recorded.")
    step = model.step
    if step is not None:
        seen = step * tc.batch_size
        lines.append(f"- **Steps:** {step:,} of batch {tc.batch_size} (of {tc.max_steps:,} "
                     f"planned); {seen:,} images seen.")
    else:
        lines.append(f"- **Steps:** not recorded with the weights (batch {tc.batch_size}, "
                     f"{tc.max_steps:,} planned).")
    if tc.init:
        before = f"{tc.init_images:,} images" if tc.init_images else "an unrecorded number " \
                                                                     "of images"
        lines.append(f"- **Started from** `{tc.init}`, whose weights had seen {before}.")
    if t is not None and t.img_per_s is not None:
        lines.append(f"- **Speed:** {t.img_per_s:.0f} images/s (the median of the logged "
                     "speeds).")
    lines.append(f"- **Optimiser:** AdamW at lr {tc.lr:g}, weight decay {tc.weight_decay:g}, "
                 f"{tc.warmup_steps:,} warm-up steps, then {tc.lr_schedule} schedule; gradient "
                 f"clipping at {tc.grad_clip:g}; mixed precision {tc.mixed_precision} in the "
                 "config.")
    lines.append(f"- **EMA:** half-life of {tc.ema_halflife_images:,} images (ramp-up "
                 f"{tc.ema_rampup:g}); these are the EMA weights.")
    if cfg.preset:
        lines.append(f"- **Preset:** `{cfg.preset}`.")
    yaml_text = cfg.to_yaml().rstrip("\n")
    lines += ["", "<details><summary>The whole config (facediff/config.yaml)</summary>", "",
              "```yaml", yaml_text, "```", "", "</details>"]
    return "\n".join(lines)


def _sampling(cfg: Config) -> str:
    from facediff.diffusion.samplers import SAMPLERS

    s = cfg.sample
    spec = SAMPLERS.get(s.sampler)
    name = f"{spec.description} (`{s.sampler}`)" if spec and spec.description else \
        f"`{s.sampler}`"
    text = f"## Sampling\n\nDefault sampler: {name}, {s.steps} steps"
    if s.sampler == "ddim":
        text += f", eta {s.eta:g}"
    text += "."
    if cfg.conditions:
        text += (f" With conditions asked for: classifier-free guidance at scale "
                 f"{s.guidance:g}" + (f", rescaled by {s.guidance_rescale:g}"
                                      if s.guidance_rescale else "") + ".")
    return text


def _fmt(v: object, spec: str, scale: float = 1.0) -> str:
    x = _float(v)
    return "" if x is None else format(x * scale, spec)


def _evaluation(measured: Measured, t: Training | None) -> str:
    rows = list(measured.rows)
    if t is not None and t.eval_row is not None:
        rows.append(ScoreRow(f"training data, during training (step {t.eval_step:,})",
                             t.eval_row))
    lines = ["## Evaluation", ""]
    if not rows:
        lines.append("Nothing was measured for this card: no scores were given. Measure with "
                     "`facediff eval MODEL --ref DATA --out DIR` and pass "
                     "`--scores DIR/results.json`.")
        return "\n".join(lines)
    acc = any("control_acc" in r.values for r in rows)
    head = "| against | n | reference n | sampler | steps | FID | KID x1e3 | precision | " \
           "recall |" + (" attribute accuracy |" if acc else "")
    lines += ["Measured with facediff's evaluation (FID, KID and precision/recall on Inception "
              "features; docs/evaluation.md). FID from a few thousand samples or fewer is "
              "biased upwards: compare rows at the same n, not with published 50k-sample FIDs.",
              "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        v = r.values
        kid = _fmt(v.get("kid"), ".2f", 1e3)
        if kid and _float(v.get("kid_std")) is not None:
            kid += f" ± {_fmt(v.get('kid_std'), '.2f', 1e3)}"
        n, n_ref = _float(v.get("n")), _float(v.get("n_ref"))
        cells = [r.against, f"{n:,.0f}" if n is not None else "",
                 f"{n_ref:,.0f}" if n_ref is not None else "", str(v.get("sampler", "")),
                 str(v.get("steps", "")), _fmt(v.get("fid"), ".2f"), kid,
                 _fmt(v.get("precision"), ".3f"), _fmt(v.get("recall"), ".3f")]
        if acc:
            cells.append(_fmt(v.get("control_acc"), ".3f"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *measured.notes] if measured.notes else []
    return "\n".join(lines)


def _files(index: dict[str, Any] | None, half: bool) -> str:
    dtype = "float16" if half else "float32"
    lines = ["## Files", ""]
    if index is not None:
        parts = ", ".join(f"`{k}/`" for k in index if not k.startswith("_"))
        lines.append(f"- `model_index.json`, {parts}: the diffusers pipeline ({dtype} "
                     "weights).")
    lines.append(f"- `facediff/`: facediff's own export (`config.yaml` with everything it was "
                 f"trained with, `weights.safetensors` in {dtype}).")
    lines.append("- `README.md`: this card, generated by facediff from the model's config, its "
                 "run's logs and the scores given.")
    return "\n".join(lines)
