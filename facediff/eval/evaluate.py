"""Evaluate a model (or a folder of images) against a reference dataset.

A model is sampled in batches; each batch is quantised to uint8 (as a PNG would store it),
optionally saved, passed through the feature network and, for a conditional model with a
classifier, judged attribute by attribute. Nothing but features and predictions is kept, so
memory does not grow with the number of samples.

Conditional models are sampled with condition rows drawn from the reference set's labels
(``cond="ref"``: the data's own attribute mix, the usual conditional-FID protocol) or with
every condition unspecified (``cond="none"``: the model's unconditional mode).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from facediff.data.conditions import UNSPECIFIED, ConditionSpec
from facediff.diffusion.samplers import SamplingSettings
from facediff.errors import FacediffError
from facediff.eval.features import FeatureExtractor
from facediff.eval.metrics import Scores, score
from facediff.eval.reference import Reference

if TYPE_CHECKING:
    from facediff.api import FaceModel
    from facediff.distributed import Shard
    from facediff.eval.classifier import TrainedClassifier

log = logging.getLogger(__name__)


def map_labels(target: ConditionSpec, source: ConditionSpec, labels: np.ndarray) -> np.ndarray:
    """Re-express ``labels`` (in ``source``'s conditions) in ``target``'s, by name and value.

    Conditions or values that ``source`` lacks become UNSPECIFIED.
    """
    out = np.full((len(labels), len(target)), UNSPECIFIED, dtype=np.int64)
    by_name = {c.name.lower(): (j, c) for j, c in enumerate(source.conditions)}
    for i, c in enumerate(target.conditions):
        if c.name.lower() not in by_name:
            continue
        j, sc = by_name[c.name.lower()]
        # one slot more, the last: an UNSPECIFIED (-1) label indexes it and stays UNSPECIFIED
        lut = np.full(len(sc.values) + 1, UNSPECIFIED, dtype=np.int64)
        for vi, v in enumerate(sc.values):
            if v in c.values:
                lut[vi] = c.values.index(v)
        out[:, i] = lut[labels[:, j].astype(np.int64)]
    return out


@dataclass
class SampleRun:
    """What one sampling pass produced: features, and control predictions if judged."""

    features: np.ndarray
    requested: np.ndarray | None = None  # (n, K) value indices asked for, in the model's spec
    predicted: np.ndarray | None = None  # (n, K) classifier's verdicts, in the model's spec
    seconds: float = 0.0
    nfe: float = 0.0  # network calls per image (a batched guidance pass counts once)


@dataclass
class Result:
    """One evaluated setting: its scores, control accuracy and how it was sampled."""

    scores: Scores
    settings: dict[str, object] = field(default_factory=dict)
    control: dict[str, float] = field(default_factory=dict)  # per condition, judged
    seconds: float = 0.0

    def row(self) -> dict[str, object]:
        row: dict[str, object] = dict(self.settings)
        row.update(self.scores.as_dict())
        if self.control:
            row["control_acc"] = float(np.mean(list(self.control.values())))
            row.update({f"acc/{k}": v for k, v in self.control.items()})
        row["seconds"] = round(self.seconds, 1)
        return row


def condition_rows(model_spec: ConditionSpec, ref: Reference | None, n: int, *, seed: int,
                   mode: str) -> np.ndarray | None:
    """The condition rows to sample a conditional model with (None: unconditional)."""
    if not len(model_spec) or mode == "none":
        return None
    if mode != "ref":
        raise FacediffError(f"unknown --cond {mode!r}; choose ref or none")
    if ref is None or ref.labels is None or ref.spec is None:
        raise FacediffError("the reference has no labels to draw conditions from: pass --ref "
                            "a labelled dataset, or --cond none to sample unconditionally")
    rows = map_labels(model_spec, ref.spec, ref.labels)
    if (rows == UNSPECIFIED).all():
        raise FacediffError(f"the reference's labels share no condition with the model's "
                            f"({', '.join(model_spec.names)}); use --cond none")
    pick = np.random.default_rng(seed).integers(0, len(rows), n)
    return rows[pick]


def sample_features(
    model: FaceModel, extractor: FeatureExtractor, n: int, *, settings: SamplingSettings,
    rows: np.ndarray | None = None, classifier: TrainedClassifier | None = None,
    save_dir: Path | None = None, progress: bool = True, shard: Shard | None = None,
) -> SampleRun:
    """Sample ``n`` images from a FaceModel with resolved ``settings`` (in batches of its
    batch size) and keep their features (and the classifier's verdicts).

    ``shard``: this process's share when several sample together (facediff.distributed);
    every process gets all ``n`` features back, in image order."""
    from tqdm.auto import tqdm

    from facediff.data.transforms import array_to_image
    from facediff.distributed import Shard

    here = shard or Shard()
    s, batch_size = settings, settings.batch_size
    clf_cols = None
    if classifier is not None and rows is not None:
        clf_spec = classifier.spec
        names = [c.name.lower() for c in clf_spec.conditions]
        clf_cols = [names.index(c.name.lower()) if c.name.lower() in names else None
                    for c in model.spec.conditions]  # None: the classifier cannot judge it
    calls = batch_start = batch_calls = 0
    starts = here.starts(n, batch_size)
    batches = max(len(starts), 1)
    bar = tqdm(total=sum(min(batch_size, n - b) for b in starts),
               desc=f"sampling {s.sampler} {s.steps} steps", unit="img",
               disable=not progress or not here.main, leave=False)
    shown = time.perf_counter()

    def count(*_: object) -> None:  # a batch of 1000 DDPM steps takes minutes: show its calls
        nonlocal calls, shown
        calls += 1
        if progress and time.perf_counter() - shown > 1.0:
            shown = time.perf_counter()
            bar.set_postfix_str(f"batch {batch_start // batch_size + 1}/{batches}: "
                                f"{calls - batch_calls} network calls")

    hook = model.net.register_forward_hook(count)
    parts: list[tuple[int, tuple[np.ndarray, np.ndarray | None]]] = []
    started = time.perf_counter()
    try:
        for start in starts:
            batch_start, batch_calls = start, calls
            m = min(batch_size, n - start)
            cond = None
            if rows is not None:
                cond = model.cond(torch.from_numpy(rows[start:start + m]))
            imgs = model.sample_tensor(m, settings=s, seed=s.seed + start, batch_size=m,
                                       cond=cond)
            pred = None
            if clf_cols is not None:
                p = classifier.model.predict(imgs).numpy()
                pred = np.stack([p[:, j] if j is not None else np.full(m, UNSPECIFIED)
                                 for j in clf_cols], axis=1)
            parts.append((start, (extractor(imgs).float().numpy(), pred)))
            if save_dir is not None:
                save_dir.mkdir(parents=True, exist_ok=True)
                for i, a in enumerate(imgs.numpy()):
                    array_to_image(a).save(save_dir / f"{start + i:06d}.png")
            bar.update(m)
    finally:
        bar.close()
        hook.remove()
    gathered = here.gather(parts)
    preds = [p for _, p in gathered if p is not None]
    return SampleRun(np.concatenate([f for f, _ in gathered]), rows,
                     np.concatenate(preds) if preds else None,
                     time.perf_counter() - started, calls / batches)


def control_accuracy(spec: ConditionSpec, run: SampleRun) -> dict[str, float]:
    """Per condition: balanced control accuracy (the mean over requested values of the
    fraction of samples judged to show that value), so that asking mostly for the common
    value cannot score high by itself."""
    from facediff.eval.classifier import balanced_accuracy

    if run.requested is None or run.predicted is None:
        return {}
    out = {}
    for j, c in enumerate(spec.conditions):
        acc = balanced_accuracy(run.requested[:, j], run.predicted[:, j])
        if not np.isnan(acc):
            out[c.name] = acc
    return out


def evaluate_model(
    model: FaceModel, ref: Reference, extractor: FeatureExtractor, n: int, *,
    settings: SamplingSettings | None = None, cond: str = "ref",
    classifier: TrainedClassifier | None = None, save_dir: Path | None = None,
    progress: bool = True, shard: Shard | None = None,
) -> Result:
    """Sample ``n`` images and score them against the reference features (``shard``: this
    process's share of the sampling, see ``sample_features``)."""
    started = time.perf_counter()
    s = model.settings(settings if settings is not None else SamplingSettings(batch_size=64))
    spec = model.spec
    rows = condition_rows(spec, ref, n, seed=s.seed, mode=cond)
    run = sample_features(model, extractor, n, settings=s, rows=rows, classifier=classifier,
                          save_dir=save_dir, progress=progress, shard=shard)
    settings_row: dict[str, object] = {
        "sampler": s.sampler, "steps": s.steps, "dtype": model.dtype,
        "nfe": round(run.nfe, 2),
        "cond": cond if len(spec) else "-", "guidance": s.guidance if rows is not None else "-"}
    return Result(score(ref.features, run.features), settings_row,
                  control_accuracy(spec, run), time.perf_counter() - started)


def evaluate_features(ref: Reference, features: np.ndarray, **settings: object) -> Result:
    started = time.perf_counter()
    return Result(score(ref.features, features), dict(settings), {}, time.perf_counter() - started)
