from __future__ import annotations

from pathlib import Path

import numpy as np

from facediff.data.conditions import Condition, ConditionSpec
from facediff.eval.classifier import (
    balanced_accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)


def _data(n: int, seed: int):
    """A bright/dark attribute and a 3-way colour group, with some labels unknown."""
    rng = np.random.default_rng(seed)
    bright = rng.integers(0, 2, n)
    colour = rng.integers(0, 3, n)
    img = rng.integers(0, 30, (n, 16, 16, 3)).astype(np.uint8)
    img[..., 0] += (150 * bright).astype(np.uint8)[:, None, None]
    img[np.arange(n), 4:12, 4:12, colour] = 220  # a bright square in that colour
    labels = np.stack([bright, colour], axis=1).astype(np.int16)
    labels[rng.random(n) < 0.1, 1] = -1
    return img, labels


def test_classifier_learns_and_round_trips(tmp_path: Path):
    spec = ConditionSpec([Condition("bright"), Condition("colour", "categorical",
                                                         ["r", "g", "b"])])
    x, y = _data(256, 0)
    vx, vy = _data(64, 1)
    clf = train_classifier(x, y, spec, val_images=vx, val_labels=vy, epochs=6, batch=64,
                           progress=False)
    assert clf.accuracy["bright"] > 0.9
    assert clf.accuracy["colour"] > 0.6 > clf.majority["colour"]
    save_classifier(clf, tmp_path / "c")
    again = load_classifier(tmp_path / "c")
    import torch

    p1 = clf.model.predict(torch.from_numpy(vx))
    p2 = again.model.predict(torch.from_numpy(vx))
    assert torch.equal(p1, p2) and again.accuracy == clf.accuracy
    assert again.balanced == clf.balanced and clf.balanced["bright"] > 0.9


def test_balanced_accuracy_does_not_reward_the_common_value():
    truth = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, -1])
    always_zero = np.zeros_like(truth)
    assert (always_zero[truth >= 0] == truth[truth >= 0]).mean() == 0.8  # plain accuracy
    assert balanced_accuracy(truth, always_zero) == 0.5  # 1.0 on the 0s, 0.0 on the 1s
    judged = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, -1, 0])  # unknown verdicts are left out
    assert balanced_accuracy(truth, judged) == (6 / 8 + 1 / 1) / 2
    assert np.isnan(balanced_accuracy(np.array([-1, -1]), np.array([0, 1])))
