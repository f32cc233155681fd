"""A small attribute classifier: judges whether generated faces show the requested values.

One convolutional trunk and one softmax head per condition (a binary attribute is a 2-way
head); unknown labels (-1) are left out of the loss. Small on purpose: it is a measuring
instrument trained in minutes on a CPU, reported with its held-out accuracy so that control
accuracies measured with it can be read against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from facediff.data.conditions import UNSPECIFIED, ConditionSpec
from facediff.data.transforms import uint8_to_model


class AttributeClassifier(nn.Module):
    def __init__(self, sizes: list[int], channels: int = 3, width: int = 32,
                 image_size: int | None = None) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.channels = channels
        self.image_size = image_size  # what it was trained at; other sizes are resized
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout),
                                 nn.SiLU())

        self.trunk = nn.Sequential(block(channels, w, 1), block(w, w, 1), block(w, 2 * w, 2),
                                   block(2 * w, 2 * w, 1), block(2 * w, 4 * w, 2),
                                   block(4 * w, 4 * w, 1), block(4 * w, 8 * w, 2),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(8 * w, sum(sizes))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] -> one logits tensor per condition."""
        return list(torch.split(self.head(self.trunk(x)), self.sizes, dim=1))

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for j, logits in enumerate(self(x)):
            y = labels[:, j]
            known = y != UNSPECIFIED
            if known.any():
                total = total + F.cross_entropy(logits[known], y[known])
        return total / len(self.sizes)

    @torch.no_grad()
    def probabilities(self, images_u8: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
        """uint8 NHWC images -> per condition, the probability of each value, (N, V)."""
        self.eval()
        out: list[list[torch.Tensor]] = [[] for _ in self.sizes]
        for s in range(0, len(images_u8), batch):
            x = uint8_to_model(images_u8[s:s + batch])
            if self.image_size and x.shape[-1] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                  antialias=True, align_corners=False)
            for j, logits in enumerate(self(x)):
                out[j].append(logits.float().softmax(1))
        return [torch.cat(p) for p in out]

    def predict(self, images_u8: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """uint8 NHWC images -> predicted value index per condition, (N, K)."""
        return torch.stack([p.argmax(1) for p in self.probabilities(images_u8, batch)], dim=1)


@dataclass
class TrainedClassifier:
    model: AttributeClassifier
    spec: ConditionSpec
    accuracy: dict[str, float]  # held-out accuracy per condition
    majority: dict[str, float]  # accuracy of always guessing the most common value
    # held-out balanced accuracy (the mean over true values of the share judged right): the
    # yardstick for ``facediff eval``'s control accuracy, which is balanced the same way
    balanced: dict[str, float] = field(default_factory=dict)


def balanced_accuracy(truth: np.ndarray, judged: np.ndarray) -> float:
    """Mean over the values present in ``truth`` of the share of ``judged`` that agrees.

    Entries where either side is UNSPECIFIED are left out; NaN when none is left. Always
    guessing the common value scores 1/(number of values present), not its frequency.
    """
    ok = (truth != UNSPECIFIED) & (judged != UNSPECIFIED)
    per_value = [float((judged[ok & (truth == v)] == v).mean()) for v in np.unique(truth[ok])]
    return float(np.mean(per_value)) if per_value else float("nan")


def score_classifier(model: AttributeClassifier, spec: ConditionSpec, images: np.ndarray,
                     labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy, balanced accuracy and majority baseline per condition on labelled images.

    Returns ``{"accuracy": ..., "balanced": ..., "majority": ...}``, each by condition name;
    a condition with no known label in ``labels`` scores NaN (unknown, not 0 or 1).
    """
    pred = model.predict(torch.from_numpy(np.array(images))).numpy()
    out: dict[str, dict[str, float]] = {"accuracy": {}, "balanced": {}, "majority": {}}
    for j, c in enumerate(spec.conditions):
        known = labels[:, j] != UNSPECIFIED
        if not known.any():
            for table in out.values():
                table[c.name] = float("nan")
            continue
        y = labels[known, j].astype(np.int64)
        out["accuracy"][c.name] = float((pred[known, j] == y).mean())
        out["balanced"][c.name] = balanced_accuracy(y, pred[known, j])
        out["majority"][c.name] = float(np.bincount(y, minlength=len(c.values)).max() / len(y))
    return out


def train_classifier(
    images: np.ndarray, labels: np.ndarray, spec: ConditionSpec, *, val_images: np.ndarray,
    val_labels: np.ndarray, epochs: int = 15, batch: int = 128, lr: float = 2e-3,
    seed: int = 0, progress: bool = True,
) -> TrainedClassifier:
    """Train on uint8 NHWC images with (N, K) labels; report held-out accuracy."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square NHWC images, got {images.shape}")
    model = AttributeClassifier([len(c.values) for c in spec.conditions], images.shape[-1],
                                image_size=images.shape[1])
    x_all = torch.from_numpy(np.array(images))
    y_all = torch.from_numpy(labels.astype(np.int64))
    steps = epochs * max(1, len(x_all) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="training classifier", disable=not progress):
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x = uint8_to_model(x_all[idx])
        flip = torch.rand(batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = model.loss(x, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    scores = score_classifier(model, spec, val_images, val_labels)
    return TrainedClassifier(model, spec, scores["accuracy"], scores["majority"],
                             scores["balanced"])


def save_classifier(clf: TrainedClassifier, path: str | Path) -> None:
    import json

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()},
              str(p / "weights.safetensors"))
    (p / "classifier.json").write_text(json.dumps(
        {"conditions": clf.spec.to_list(), "channels": clf.model.channels,
         "image_size": clf.model.image_size,
         "accuracy": clf.accuracy,
         "majority": clf.majority,
         "balanced": clf.balanced}, indent=1))


# an attribute model ships its classifier in this folder of its model dir (or of its run dir)
CLASSIFIER_DIR = "classifier"


def shipped_classifier(model_path: Path | None) -> Path | None:
    """The classifier dir shipped with a model: ``classifier/`` in the folder its weights
    came from, or in the run dir around that checkpoint or export; None if there is none."""
    if model_path is None:
        return None
    for d in (model_path, *list(model_path.parents)[:2]):
        if (d / CLASSIFIER_DIR / "classifier.json").is_file():
            return d / CLASSIFIER_DIR
    return None


def load_classifier(path: str | Path) -> TrainedClassifier:
    """A classifier dir written by ``save_classifier``; FacediffError if it is not one."""
    import json

    from facediff.errors import FacediffError

    p = Path(path)
    try:
        meta = json.loads((p / "classifier.json").read_text())
        spec = ConditionSpec.from_list(meta["conditions"])
        model = AttributeClassifier([len(c.values) for c in spec.conditions],
                                    meta.get("channels", 3), image_size=meta.get("image_size"))
        model.load_state_dict(load_file(str(p / "weights.safetensors")))
        return TrainedClassifier(model.eval(), spec, meta["accuracy"], meta["majority"],
                                 meta.get("balanced", {}))  # older files lack it
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise FacediffError(f"not a usable classifier dir (facediff classifier train writes "
                            f"one): {path}: {type(e).__name__}: {e}") from e
