"""``sample --like``, measured: how often faces generated from a photo's attributes show them.

Run by hand, not in CI:
    python bench/like.py --model celeba-attrs-32 --data ../shared/datasets/celeba-6k \
        --photos 100 --per-photo 4 --steps 20 [--guidance 3] [--classifier DIR]

For the first --photos photos of CelebA's official test split (never trained on):
1. the classifier shipped with the model reads each photo twice: from its face found and
   aligned to the model's crop (what ``--like`` does) and from the dataset's own crop (the
   crop the classifier was trained on); both readings are scored against CelebA's labels
   (the classifier's accuracy on real test photos, the yardstick);
2. --per-photo faces are generated with what ``--like`` asks for (the aligned readings of at
   least --min-confidence), and the classifier reads them again: the agreement with the
   photo's reading, per attribute, where it was asked for;
3. the same number of faces generated with no attributes, read the same way: the agreement
   that chance (the model's own attribute rates) gives on the same photos.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import facediff
from facediff.config import DataConfig
from facediff.data.sources.celeba import celeba_records
from facediff.data.transforms import crop_resize
from facediff.faces import face_crop, model_template
from facediff.faces.detect import FaceNotFoundError
from facediff.faces.like import MIN_CONFIDENCE, keep_readings, model_classifier, read_attributes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="celeba-attrs-32")
    ap.add_argument("--data", required=True, help="CelebA dir (official layout)")
    ap.add_argument("--classifier", help="default: the model's own")
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--per-photo", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float)
    ap.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE)
    args = ap.parse_args()

    model = facediff.load(args.model, device="cpu")
    clf = model_classifier(model, args.classifier)
    names = [c.name for c in clf.spec.conditions if c.name in model.spec.names]
    size = clf.model.image_size or model.config.data.image_size
    cfg = model.config.data
    records = celeba_records(DataConfig(path=args.data, split="test",
                                        celeba_crop=cfg.celeba_crop))
    col = {n: records.spec.names.index(n) for n in names}
    template = model_template(cfg, tuple(model.spec.names))
    started = time.perf_counter()
    aligned_read, dataset_read, truth, skipped = [], [], [], 0
    for i in range(min(args.photos, len(records))):
        img = records.open_image(i).convert("RGB")
        try:
            crop = face_crop(img, template, size).image
        except FaceNotFoundError:
            skipped += 1
            continue
        own = crop_resize(img.crop(records.crop_box) if records.crop_box else img, size)
        aligned_read.append(read_attributes(clf, np.asarray(crop), names))
        dataset_read.append(read_attributes(clf, np.asarray(own), names))
        truth.append([int(records.labels[i, col[n]]) for n in names])
    read_s = time.perf_counter() - started
    n = len(aligned_read)
    t = np.array(truth)

    def as_index(readings: list) -> np.ndarray:
        return np.array([[int(r.value) for r in row] for row in readings])

    a, d = as_index(aligned_read), as_index(dataset_read)
    settings = model.settings(steps=args.steps, guidance=args.guidance)
    started = time.perf_counter()
    agree = np.zeros((n, len(names)))
    chance = np.zeros((n, len(names)))
    asked = np.zeros((n, len(names)), bool)  # what --like asked for: the sure readings
    for k, row in enumerate(aligned_read):
        kept = keep_readings(row, None, args.min_confidence)
        asked[k] = [r in kept for r in row]
        gen = model.sample_tensor(args.per_photo, settings=settings, seed=1000 * k,
                                  attrs=[r.request for r in kept])
        base = model.sample_tensor(args.per_photo, settings=settings, seed=1000 * k)
        want = a[k][None]
        agree[k] = (clf.model.predict(gen).numpy() == want).mean(0)
        chance[k] = (clf.model.predict(base).numpy() == want).mean(0)
    gen_s = time.perf_counter() - started

    print(f"{args.model}: {n} test photos of {args.data} ({skipped} without a face found), "
          f"{args.per_photo} faces each, {settings.sampler} {settings.steps} steps, guidance "
          f"{settings.guidance}; classifier at {size} px; reading {read_s:.0f} s, "
          f"generating {gen_s:.0f} s")
    print("| attribute | photos with it (labels) | classifier acc, aligned crop | "
          "classifier acc, dataset crop | read surely (asked for) | --like faces agree, "
          "where asked | unconditional faces agree, same photos |")
    print("|---|---|---|---|---|---|---|")
    for j, name in enumerate(names):
        m = asked[:, j]
        print(f"| {name} | {t[:, j].mean():.2f} | {(a[:, j] == t[:, j]).mean():.3f} | "
              f"{(d[:, j] == t[:, j]).mean():.3f} | {m.mean():.2f} | "
              f"{agree[m, j].mean() if m.any() else float('nan'):.3f} | "
              f"{chance[m, j].mean() if m.any() else float('nan'):.3f} |")
    print(f"| mean | | {(a == t).mean():.3f} | {(d == t).mean():.3f} | {asked.mean():.2f} | "
          f"{agree[asked].mean():.3f} | {chance[asked].mean():.3f} |")
    exact = np.mean([(agree[k][asked[k]] == 1).all() for k in range(n)])
    print(f"photos whose {args.per_photo} faces all show every attribute asked for: {exact:.2f}")


if __name__ == "__main__":
    main()
