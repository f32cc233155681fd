"""Measure how facediff finds and aligns faces on real photos (docs/faces.md).

Four parts, each printed as Markdown tables (run by hand; the real sets are research-only and
never leave ``--data``):

- ``celeba``: celeba-6k is already CelebA-aligned, so aligning a photo with the ``celeba``
  template should give back its own 140 px centre crop. Where the photo's own landmarks sit in
  that crop against the template's points, how far the fitted transform moves from the identity,
  the crop's pixels against the identity crop's, the detection rate, by official partition;
  and the held-out number: the test partition against a template fitted on the train
  partition only (the package's ``MEAN_FACE`` is the mean over all 6,000, these same photos).
  It also prints the mean landmarks in ``MEAN_FACE``'s form (``template`` prints only that).
- ``celebahq``: celebahq-128's crops against the two templates that could frame them: the
  ``celebahq`` points template and the ``ffhq`` rule (as is, and through the best fixed
  sub-crop of its square). Both are fitted on ``--hq-train`` (every ``--hq-every``-th photo,
  detected at 2x: the mean face in ``CELEBAHQ_FACE``'s form, the sub-crop's medians) and
  measured on ``--hq-heldout``, detected at 128 px and upscaled 2x: scale, rotation, centre
  offset and crop-corner error against the photo itself (the identity crop).
- ``dlib``: the dlib fallback (``detector="dlib"``) beside yuface on every ``--dlib-every``-th
  photo of celeba-6k: detection rate and time, and the ``celeba`` re-alignment errors
  (skipped if dlib is not installed).
- ``resample``: the identity crop through align's resampler against the training pipeline's
  Lanczos crop, at several crop sizes (no detection).
- ``utkface``: the detection rate and time, by age group, race and gender.
- ``speed``: seconds per photo for detection and for detect + align at four photo sizes.

    OMP_NUM_THREADS=1 python bench/faces.py --data ../shared/datasets --out faces.json
    python bench/faces.py celeba utkface --limit 500      # a quick look at a subset
    python bench/faces.py celebahq dlib resample           # the templates, dlib, the resampler
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread unless asked otherwise

import argparse
import json
import math
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image

from facediff.data.transforms import crop_resize
from facediff.errors import FacediffError
from facediff.faces import (
    align_face,
    detect_faces,
    face_crop,
    get_detector,
    get_template,
    pick_face,
)
from facediff.faces.align import _MAX_STRIDE, warp_to_crop
from facediff.faces.detect import DETECT_MAX_SIDE, MIN_SCORE
from facediff.faces.geometry import apply, compose, invert
from facediff.faces.geometry import scale as _scale
from facediff.faces.geometry import shift as _shift
from facediff.faces.photo import MAX_UPSCALE
from facediff.faces.templates import CELEBAHQ_FACE, MEAN_FACE

SECTIONS = ("celeba", "celebahq", "dlib", "resample", "utkface", "speed")
BOX, SIDE = np.array([19.0, 39.0]), 140.0  # the 140 px CelebA training crop of 178 x 218
POINTS = ("left eye", "right eye", "nose", "left mouth", "right mouth")
AGE_GROUPS = ((0, 9), (10, 19), (20, 59), (60, 200))
RACES = ("White", "Black", "Asian", "Indian", "Others")
SPEED_SIZES = ((200, 200), (640, 480), (1920, 1080), (4000, 3000))
RESAMPLE_SIZES = (48, 64, 80, 88, 96, 112, 128)  # 140 px: 2.9 to 1.1 photo px per crop px
DETECTOR = "yuface"


# ---------------------------------------------------------------- small helpers

def subset(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the sorted list (so a subset spans it)."""
    if limit is None or limit >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def stats(x) -> dict:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"n": 0}
    return {"n": len(x), "mean": float(x.mean()), "std": float(x.std()),
            "median": float(np.median(x)), "p5": float(np.percentile(x, 5)),
            "p95": float(np.percentile(x, 95)), "max": float(x.max())}


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate k / n."""
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.96, k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mid - half, mid + half


def table(head: list[str], rows: list[list]) -> None:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(fmt(v) for v in r) + " |")
    print()


def similarity_parts(m: np.ndarray) -> tuple[float, float]:
    """(scale, rotation in degrees) of a 2 x 3 similarity; positive angles turn x towards y
    (clockwise on screen, y down)."""
    return float(np.hypot(m[0, 0], m[1, 0])), float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


def psnr(a: Image.Image, b: Image.Image) -> float:
    d = np.asarray(a, float) - np.asarray(b, float)
    mse = float((d * d).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def detect(img: Image.Image, detector: str = DETECTOR):
    """(seconds, faces) for one photo."""
    t = time.perf_counter()
    faces = detect_faces(img, detector)
    return time.perf_counter() - t, faces


def rate_row(name: str, k: int, n: int) -> list:
    lo, hi = wilson(k, n)
    return [name, n, k, f"{100 * k / max(n, 1):.1f} %", f"{100 * lo:.1f}-{100 * hi:.1f} %"]


# ---------------------------------------------------------------- 1. CelebA re-alignment

def identity_crop(size: int) -> np.ndarray:
    """Photo px of a 178 x 218 CelebA image -> px of its 140 px centre crop at ``size``."""
    return compose(_scale(size / SIDE), _shift(*-BOX))


def celeba(root: Path, limit: int | None, only_template: bool = False) -> dict:
    folder = root / "celeba-6k"
    part = {}
    for line in (folder / "list_eval_partition.txt").read_text().split("\n"):
        if line.strip():
            name, k = line.split()
            part[name] = ("train", "val", "test")[int(k)]
    files = subset(sorted((folder / "img_align_celeba").glob("*.jpg")), limit)
    tpl = get_template("celeba", int(SIDE))
    n = len(files)
    lm = np.full((n, 5, 2), np.nan)
    n_faces = np.zeros(n, int)
    secs = np.zeros(n)
    px = {s: np.full((n, 2), np.nan) for s in (64, 128)}  # (aligned vs identity, resample floor)
    align_secs = []
    t_all = time.perf_counter()
    for i, p in enumerate(files):
        with Image.open(p) as im:
            img = im.convert("RGB")
        secs[i], faces = detect(img)
        n_faces[i] = len(faces)
        if not faces:
            continue
        _, f = pick_face(faces)
        lm[i] = f.landmarks
        if only_template:
            continue
        for s in (64, 128):
            t = time.perf_counter()
            got = align_face(img, f, tpl, s).image
            if s == 64:
                align_secs.append(time.perf_counter() - t)
            ref = warp_to_crop(img, identity_crop(s), s)  # same resampler, identity transform
            train = crop_resize(img.crop((19, 39, 159, 179)), s)  # what training saw
            px[s][i] = psnr(got, ref), psnr(ref, train)
    wall = time.perf_counter() - t_all
    found = n_faces > 0
    names = [p.name for p in files]
    parts = np.array([part.get(x, "?") for x in names])
    mean_all = np.nanmean(lm, 0)
    train = found & (parts == "train")
    mean_train = lm[train].mean(0)
    print(f"## CelebA re-alignment: celeba-6k, {n} photos ({wall:.0f} s)\n")
    print("mean yuface landmarks over the detected photos, px of 178 x 218 (MEAN_FACE's form):")
    print("MEAN_FACE = np.array([" + ", ".join(f"[{x:.2f}, {y:.2f}]" for x, y in mean_all)
          + "])")
    print(f"largest difference from the package's MEAN_FACE: "
          f"{np.abs(mean_all - MEAN_FACE).max():.3f} px\n")
    out = {"photos": n, "seconds": wall, "mean_landmarks": mean_all.tolist(),
           "mean_landmarks_train": mean_train.tolist(),
           "max_diff_from_MEAN_FACE_px": float(np.abs(mean_all - MEAN_FACE).max()),
           "missed": [x for x, ok in zip(names, found, strict=True) if not ok]}
    if only_template:
        return out

    # detection rate by partition
    rows = [rate_row(g, int((found & (parts == g)).sum()), int((parts == g).sum()))
            for g in ("train", "val", "test")]
    rows.append(rate_row("all", int(found.sum()), n))
    print(f"detection (score > {MIN_SCORE}); {int((n_faces > 1).sum())} photos with more than "
          f"one face (the largest is used); {stats(secs)['median']:.4f} s/photo median "
          f"detection, {statistics.median(align_secs):.4f} s align at 64 px")
    table(["partition", "photos", "found", "rate", "95 % CI"], rows)
    out["detection"] = {r[0]: {"photos": r[1], "found": r[2]} for r in rows}
    out["multi_face_photos"] = int((n_faces > 1).sum())
    out["seconds_per_photo"] = stats(secs)
    out["align_seconds_64"] = stats(align_secs)

    tpl_train = (mean_train - BOX) / SIDE
    own = (lm - BOX) / SIDE  # the photo's own landmarks in the unit training crop

    def errors(points: np.ndarray, mask: np.ndarray, size: int = 64) -> dict:
        """Per-photo distances (px at ``size``) of the own landmarks from ``points``."""
        d = np.hypot(*(own[mask] - points).transpose(2, 0, 1)) * size  # (n, 5)
        mid = np.hypot(*(own[mask, :2].mean(1) - points[:2].mean(0)).T) * size
        res = {name: d[:, j] for j, name in enumerate(POINTS)}
        res["eyes (both)"] = d[:, :2].mean(1)
        res["eye midpoint"] = mid
        res["all 5"] = d.mean(1)
        return res

    print("(a) the photo's own landmarks in its 140 px training crop against the template's "
          "points, px of a 64 crop (x2 for 128); template = the package's MEAN_FACE (the mean "
          "over all 6,000: the mean error is small by construction) or the train-partition "
          "mean (the test row under it is held out):")
    rows = []
    out["landmark_error_px64"] = {}
    sets = [("all", found, tpl.points, "MEAN_FACE")]
    sets += [(g, found & (parts == g), tpl.points, "MEAN_FACE") for g in ("train", "val", "test")]
    sets += [("test", found & (parts == "test"), tpl_train, "train mean (held out)")]
    for g, mask, pts, tname in sets:
        e = errors(pts, mask)
        key = f"{g} / {tname}"
        out["landmark_error_px64"][key] = {k: stats(v) for k, v in e.items()}
        for k in ("eyes (both)", "eye midpoint", "all 5"):
            s = stats(e[k])
            rows.append([g, tname, k, s["n"], s["mean"], s["median"], s["p95"]])
    table(["partition", "template", "points", "photos", "mean", "median", "p95"], rows)

    e = errors(tpl.points, found)
    rows = []
    for k in POINTS:
        s = stats(e[k])
        rows.append([k, s["mean"], s["median"], s["p95"]])
    signed = ((own[found] - tpl.points) * 64).mean(0)
    for r, (dx, dy) in zip(rows, signed, strict=True):
        r += [f"{dx:+.2f}, {dy:+.2f}"]
    table(["point (all photos, MEAN_FACE)", "mean", "median", "p95", "mean dx, dy"], rows)

    # after alignment: the residual of the fit, where the fitted crop puts the landmarks
    resid = []
    shape = []
    for i in np.flatnonzero(found):
        m = tpl.matrix(lm[i])
        resid.append(np.hypot(*(apply(m, lm[i]) - tpl.points).T).mean() * 64)
        back = invert(m)  # unit crop -> photo px
        scale, rot = similarity_parts(m)
        centre = apply(back, np.array([[0.5, 0.5]]))[0]
        shape.append([1.0 / scale / SIDE, rot, *((centre - (BOX + SIDE / 2)) / SIDE * 64)])
    shape = np.array(shape).reshape(-1, 4)
    resid = np.array(resid)
    shift = np.hypot(shape[:, 2], shape[:, 3])
    print("(b) the fitted alignment against the identity (the 140 px centre crop), all photos, "
          "MEAN_FACE template; scale = the fitted crop's side / 140; rotation: positive turns "
          "the face clockwise into the crop; shift: the fitted crop's centre from the 140 crop's, "
          "px at 64:")
    rows = []
    for name, v in (("scale", shape[:, 0]), ("rotation (deg)", shape[:, 1]),
                    ("|rotation| (deg)", np.abs(shape[:, 1])), ("shift dx (px)", shape[:, 2]),
                    ("shift dy (px)", shape[:, 3]), ("|shift| (px)", shift),
                    ("residual after fit, all 5 (px)", resid)):
        s = stats(v)
        rows.append([name, s["mean"], s["std"], s["median"], s["p5"], s["p95"]])
        out.setdefault("transform", {})[name] = s
    table(["quantity", "mean", "std", "median", "p5", "p95"], rows)

    print("the aligned crop's pixels against the identity crop's (same resampler, "
          "warp_to_crop), PSNR dB; and the identity crop through warp_to_crop against the "
          "training pipeline's crop of the same 140 px square (crop_resize, Lanczos): the "
          "resampler's own difference:")
    rows = []
    for s in (64, 128):
        a, b = stats(px[s][:, 0]), stats(px[s][:, 1])
        rows.append([s, a["mean"], a["median"], a["p5"], b["median"]])
        out[f"psnr_{s}"] = {"aligned_vs_identity": a, "identity_vs_training_crop": b}
    table(["crop px", "PSNR mean", "median", "p5", "identity vs training crop, median"], rows)
    return out


# ---------------------------------------------------------------- 2. celebahq-128's templates

HQ_MODES = (("1x", 1), ("2x", 2))  # detected at 128 px, and upscaled 2x (bicubic)
UNIT_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def hq_landmarks(files: list[Path], scales=(1, 2)) -> dict:
    """{k: (landmarks (n, 5, 2) in px of the 128 photo, NaN where none found; seconds per
    photo; photos with several faces)} for detection at ``k`` x the photo's size."""
    res = {k: ([], [], 0) for k in scales}
    for p in files:
        with Image.open(p) as im:
            img = im.convert("RGB")
        for k in scales:
            lm, secs, multi = res[k]
            t = time.perf_counter()
            src = img if k == 1 else img.resize((img.width * k, img.height * k),
                                                Image.Resampling.BICUBIC)
            faces = detect_faces(src, DETECTOR)
            secs.append(time.perf_counter() - t)
            lm.append(pick_face(faces)[1].landmarks / k if faces else np.full((5, 2), np.nan))
            res[k] = lm, secs, multi + (len(faces) > 1)
    return {k: (np.array(lm).reshape(-1, 5, 2), secs, multi)
            for k, (lm, secs, multi) in res.items()}


def sub_crop(side: float, cx: float, cy: float) -> np.ndarray:
    """Unit crop of the ffhq rule -> unit crop of its square of ``side`` centred at (cx, cy)."""
    return compose(_shift(0.5, 0.5), compose(_scale(1.0 / side), _shift(-cx, -cy)))


def crop_vs_photo(m: np.ndarray, size: float = 128.0) -> list[float]:
    """A crop (``m``: photo px -> unit crop) against the photo itself (the identity crop):
    [side / photo side, rotation deg, centre dx, dy px, mean corner distance px]."""
    back = invert(m)
    k, rot = similarity_parts(m)
    centre = apply(back, np.array([[0.5, 0.5]]))[0] - size / 2
    corners = np.hypot(*(apply(back, UNIT_CORNERS) - UNIT_CORNERS * size).T).mean()
    return [1.0 / k / size, rot, *centre, float(corners)]


def celebahq(heldout: Path, train: Path, limit: int | None, every: int) -> dict:
    """celebahq-128 against the two templates that could frame it: the ``celebahq`` points
    template (the mean face of ``train``, every ``every``-th photo, detected at 2x) and the
    ``ffhq`` rule, as is and through the best fixed sub-crop of its square (the train medians),
    measured on ``heldout``, which neither was fitted to."""
    fit_files = subset(sorted(train.glob("*.jpg"))[::every], limit)
    test_files = subset(sorted(heldout.glob("*.jpg")), limit)
    ffhq, hq = get_template("ffhq"), get_template("celebahq")
    out: dict = {"train": str(train), "heldout": str(heldout), "train_every": every}
    print(f"## celebahq-128: the celebahq template and the ffhq rule; fitted on {len(fit_files)} "
          f"photos of {train} (every {every}th), measured on {len(test_files)} of {heldout}\n")

    # the fit: the mean face (CELEBAHQ_FACE's form) and the rule's sub-crop, from train at 2x
    t0 = time.perf_counter()
    lm_fit = hq_landmarks(fit_files, (2,))[2][0]
    ok = np.isfinite(lm_fit[:, 0, 0])
    mean = lm_fit[ok].mean(0)
    window = []  # the photo as a square of the rule's unit crop: side, centre x, y
    for x in lm_fit[ok]:
        m = ffhq.matrix(x)
        window.append([128 * similarity_parts(m)[0], *apply(m, np.array([[64.0, 64.0]]))[0]])
    side, cx, cy = np.median(np.array(window), 0)
    fit_secs = time.perf_counter() - t0
    print(f"fit ({fit_secs:.0f} s): {int(ok.sum())} of {len(fit_files)} found at 2x; mean "
          "landmarks, px of 128 (CELEBAHQ_FACE's form):")
    print("CELEBAHQ_FACE = np.array([" + ", ".join(f"[{x:.2f}, {y:.2f}]" for x, y in mean)
          + "])")
    print(f"largest difference from the package's CELEBAHQ_FACE: "
          f"{np.abs(mean - CELEBAHQ_FACE).max():.3f} px; the photo is the ffhq rule's square "
          f"of side {side:.4f} centred at ({cx:.4f}, {cy:.4f}) (medians)\n")
    out["fit"] = {"photos": len(fit_files), "found": int(ok.sum()), "seconds": fit_secs,
                  "mean_landmarks_px128": mean.tolist(),
                  "max_diff_from_CELEBAHQ_FACE_px": float(np.abs(mean - CELEBAHQ_FACE).max()),
                  "ffhq_sub_crop": {"side": side, "centre": [cx, cy]}}

    # held out: detection, then each template's crop against the photo itself
    t0 = time.perf_counter()
    found = hq_landmarks(test_files)
    wall = time.perf_counter() - t0
    out["seconds"] = wall
    rows = []
    for mode, k in HQ_MODES:
        lm, secs, multi = found[k]
        n_ok = int(np.isfinite(lm[:, 0, 0]).sum())
        rows.append([*rate_row(mode, n_ok, len(test_files)), multi,
                     f"{statistics.median(secs):.4f}"])
        out[f"detection_{mode}"] = {"found": n_ok, "multi_face": multi,
                                    "seconds_per_photo": stats(secs)}
    print(f"held-out detection ({wall:.0f} s for both)")
    table(["detected at", "photos", "found", "rate", "95 % CI", "several faces", "s/photo"],
          rows)
    d = np.hypot(*(found[1][0] - found[2][0]).transpose(2, 0, 1)).mean(1)
    out["landmarks_1x_vs_2x_px"] = stats(d)
    print(f"landmarks at 1x vs 2x (mean of the 5 points, px of 128): median "
          f"{stats(d)['median']:.2f}, p95 {stats(d)['p95']:.2f}\n")

    crops = {"celebahq": lambda x: hq.matrix(x), "ffhq": lambda x: ffhq.matrix(x),
             f"ffhq, sub-crop {side:.3f} at ({cx:.3f}, {cy:.3f})":
             lambda x: compose(sub_crop(side, cx, cy), ffhq.matrix(x))}
    rows, out["crops"] = [], {}
    for name, matrix in crops.items():
        for mode, k in HQ_MODES:
            lm = found[k][0]
            v = np.array([crop_vs_photo(matrix(x)) for x in lm[np.isfinite(lm[:, 0, 0])]])
            v = v.reshape(-1, 5)
            q = {"scale": stats(v[:, 0]), "rotation (deg)": stats(v[:, 1]),
                 "|rotation| (deg)": stats(np.abs(v[:, 1])), "centre dx (px)": stats(v[:, 2]),
                 "centre dy (px)": stats(v[:, 3]),
                 "|centre offset| (px)": stats(np.hypot(v[:, 2], v[:, 3])),
                 "corner error (px)": stats(v[:, 4])}
            out["crops"][f"{name} / {mode}"] = q
            sc, c = q["scale"], q["corner error (px)"]
            rows.append([name, mode, sc["n"],
                         f"{sc['median']:.3f} ({sc['p5']:.3f}-{sc['p95']:.3f})",
                         q["|rotation| (deg)"]["median"],
                         f"{q['centre dx (px)']['median']:+.2f} ({q['centre dx (px)']['std']:.2f})",
                         f"{q['centre dy (px)']['median']:+.2f} ({q['centre dy (px)']['std']:.2f})",
                         q["|centre offset| (px)"]["median"],
                         f"{c['mean']:.2f} / {c['median']:.2f} / {c['p95']:.2f}"])
    print("each template's crop against the photo itself (celebahq-128's own crop: scale 1, "
          "rotation 0, centre offset 0); scale = the crop's side / 128; px of the 128 photo; "
          "corner error: the mean distance of the crop's 4 corners from the photo's:")
    table(["template", "detected at", "photos", "scale median (p5-p95)", "|rotation| deg median",
           "centre dx median (std)", "centre dy median (std)", "|offset| median",
           "corner error mean / median / p95"], rows)
    return out


# ---------------------------------------------------------------- 3. the dlib fallback on CelebA

def crop_errors(lm: np.ndarray, points: np.ndarray, size: int = 64) -> dict:
    """Per-photo distances (px at ``size``) of landmarks (n, 5, 2; px of the 178 x 218 CelebA
    image) in their 140 px training crop from the template's unit ``points``."""
    own = (lm - BOX) / SIDE
    d = np.hypot(*(own - points).transpose(2, 0, 1)) * size  # (n, 5)
    res = {name: d[:, j] for j, name in enumerate(POINTS)}
    res["eyes (both)"] = d[:, :2].mean(1)
    res["eye midpoint"] = np.hypot(*(own[:, :2].mean(1) - points[:2].mean(0)).T) * size
    res["mouth (both)"] = d[:, 3:].mean(1)
    res["all 5"] = d.mean(1)
    return res


def dlib_fallback(root: Path, limit: int | None, every: int) -> dict:
    """The dlib detector (``detector="dlib"``) beside yuface on the same CelebA photos: the
    detection rate and time, and the celeba re-alignment (as the ``celeba`` section)."""
    try:
        get_detector("dlib")  # loads the model once, outside the timings
    except FacediffError as e:
        print(f"## dlib fallback: skipped ({e})\n")
        return {"skipped": str(e)}
    files = subset(sorted((root / "celeba-6k" / "img_align_celeba").glob("*.jpg"))[::every],
                   limit)
    tpl = get_template("celeba", int(SIDE))
    dets = ("yuface", "dlib")
    n = len(files)
    lm = {d: np.full((n, 5, 2), np.nan) for d in dets}
    secs = {d: np.zeros(n) for d in dets}
    multi = dict.fromkeys(dets, 0)
    px = {d: np.full(n, np.nan) for d in dets}
    t0 = time.perf_counter()
    for i, p in enumerate(files):
        with Image.open(p) as im:
            img = im.convert("RGB")
        ref = warp_to_crop(img, identity_crop(64), 64)
        for d in dets:
            secs[d][i], faces = detect(img, d)
            multi[d] += len(faces) > 1
            if faces:
                _, f = pick_face(faces)
                lm[d][i] = f.landmarks
                px[d][i] = psnr(align_face(img, f, tpl, 64).image, ref)
    wall = time.perf_counter() - t0
    found = {d: np.isfinite(lm[d][:, 0, 0]) for d in dets}
    both = found["yuface"] & found["dlib"]
    print(f"## dlib fallback beside yuface: celeba-6k, {n} photos (every {every}th; {wall:.0f} s "
          "for both)\n")
    out: dict = {"photos": n, "every": every, "seconds": wall, "both_found": int(both.sum()),
                 "missed_by_dlib": [p.name for p, ok in zip(files, found["dlib"], strict=True)
                                    if not ok]}
    rows = []
    for d in dets:
        k = int(found[d].sum())
        rows.append([*rate_row(d, k, n), multi[d], f"{np.median(secs[d]):.4f}",
                     f"{secs[d].mean():.4f}"])
        out[d] = {"found": k, "multi_face": multi[d], "seconds_per_photo": stats(secs[d])}
    print("detection (the largest face is used where there are several):")
    table(["detector", "photos", "found", "rate", "95 % CI", "several faces", "s/photo median",
           "mean"], rows)

    print(f"the photo's landmarks in its 140 px training crop against the celeba template "
          f"(MEAN_FACE), px of a 64 crop (x2 for 128), the {int(both.sum())} photos both found; "
          "mean / median / p95 (dlib's mouth corners are placed from its three points, not "
          "found):")
    keys = ("eyes (both)", "eye midpoint", "nose", "mouth (both)", "all 5")
    rows = []
    for d in dets:
        e = crop_errors(lm[d][both], tpl.points)
        out[d]["landmark_error_px64"] = {k: stats(v) for k, v in e.items()}
        rows.append([d] + [f"{stats(e[k])['mean']:.2f} / {stats(e[k])['median']:.2f} / "
                           f"{stats(e[k])['p95']:.2f}" for k in keys])
    table(["detector", *keys], rows)

    print("the fitted alignment against the identity (the 140 px crop), same photos: scale = "
          "the crop's side / 140, |shift| px at 64; and the aligned 64 px crop's pixels against "
          "the identity crop's (PSNR dB, same resampler):")
    rows = []
    for d in dets:
        shape = []
        for x in lm[d][both]:
            m = tpl.matrix(x)
            k, rot = similarity_parts(m)
            centre = apply(invert(m), np.array([[0.5, 0.5]]))[0]
            shape.append([1.0 / k / SIDE, abs(rot),
                          float(np.hypot(*(centre - (BOX + SIDE / 2)))) / SIDE * 64])
        shape = np.array(shape).reshape(-1, 3)
        sc, r, s, q = stats(shape[:, 0]), stats(shape[:, 1]), stats(shape[:, 2]), \
            stats(px[d][both])
        out[d]["transform"] = {"scale": sc, "|rotation| (deg)": r, "|shift| (px64)": s,
                               "psnr_64_aligned_vs_identity": q}
        rows.append([d, f"{sc['median']:.3f} ({sc['p5']:.3f}-{sc['p95']:.3f})",
                     f"{r['median']:.2f} / {r['p95']:.2f}", f"{s['median']:.2f} / {s['p95']:.2f}",
                     f"{q['median']:.2f} ({q['p5']:.2f})"])
    table(["detector", "scale median (p5-p95)", "|rotation| deg median / p95",
           "|shift| median / p95", "PSNR 64 median (p5)"], rows)

    dist = np.hypot(*(lm["dlib"][both] - lm["yuface"][both]).transpose(2, 0, 1))
    out["dlib_vs_yuface_px"] = {name: stats(dist[:, j]) for j, name in enumerate(POINTS)}
    print("dlib's five landmarks from yuface's, px of 178 x 218, mean / median: "
          + ", ".join(f"{name} {dist[:, j].mean():.2f} / {np.median(dist[:, j]):.2f}"
                      for j, name in enumerate(POINTS)))
    print()
    return out


# ---------------------------------------------------------------- 4. the resampler

def resample(root: Path, limit: int | None) -> dict:
    """The identity crop through ``warp_to_crop`` (align's resampler: box pre-shrink, then
    bicubic) against the training pipeline's crop of the same 140 px square (``crop_resize``,
    Lanczos), at several crop sizes: what the resampler alone costs, no detection."""
    files = subset(sorted((root / "celeba-6k" / "img_align_celeba").glob("*.jpg")), limit)
    v = {s: [] for s in RESAMPLE_SIZES}
    t0 = time.perf_counter()
    for p in files:
        with Image.open(p) as im:
            img = im.convert("RGB")
        square = img.crop((19, 39, 159, 179))
        for s in RESAMPLE_SIZES:
            v[s].append(psnr(warp_to_crop(img, identity_crop(s), s), crop_resize(square, s)))
    wall = time.perf_counter() - t0
    print(f"## The resampler: identity crop (warp_to_crop) vs the training crop (crop_resize, "
          f"Lanczos), celeba-6k, {len(files)} photos ({wall:.0f} s)\n")
    rows, out = [], {"photos": len(files), "seconds": wall}
    for s in RESAMPLE_SIZES:
        stride = SIDE / s
        q = out[str(s)] = stats(v[s])
        rows.append([s, f"{stride:.3f}", max(1, math.ceil(stride / _MAX_STRIDE)), q["mean"],
                     q["median"], q["p5"]])
    table(["crop px", "photo px per crop px", "pre-shrink", "PSNR mean", "median", "p5"], rows)
    return out


# ---------------------------------------------------------------- 5. UTKFace detection

def utkface(root: Path, limit: int | None) -> dict:
    files = subset(sorted((root / "utkface").glob("*.jpg")), limit)
    tpls = {"celeba": get_template("celeba", int(SIDE)), "ffhq": get_template("ffhq")}
    rec = []
    t0 = time.perf_counter()
    for p in files:
        f = p.name.split("_")
        age, gender = int(f[0]), int(f[1])
        race = int(f[2]) if len(f) >= 4 else None
        with Image.open(p) as im:
            img = im.convert("RGB")
        secs, faces = detect(img)
        small = {}
        if faces:
            _, face = pick_face(faces)
            for name, tpl in tpls.items():  # photo.face_crop's too-small rule, at 128 px
                side = 1.0 / float(np.hypot(*tpl.matrix(face.landmarks)[0, :2]))
                small[name] = 128 / side > MAX_UPSCALE
        rec.append({"age": age, "gender": gender, "race": race, "n": len(faces), "secs": secs,
                    "score": max((x.score for x in faces), default=0.0), "small": small})
    wall = time.perf_counter() - t0
    n = len(rec)
    found = np.array([r["n"] > 0 for r in rec])
    secs = [r["secs"] for r in rec]
    print(f"## Detection on UTKFace crop_part1 (200 x 200): {n} photos ({wall:.0f} s)\n")
    print(f"{stats(secs)['median']:.4f} s/photo median ({stats(secs)['mean']:.4f} mean); "
          f"{sum(r['n'] > 1 for r in rec)} photos with more than one face; too small for a "
          f"128 px crop (enlarged > {MAX_UPSCALE:g}x): "
          + ", ".join(f"{k} {sum(r['small'].get(k, False) for r in rec)}" for k in tpls))
    out = {"photos": n, "seconds": wall, "seconds_per_photo": stats(secs),
           "multi_face": int(sum(r["n"] > 1 for r in rec)), "groups": {},
           "missed": [p.name for p, r in zip(files, rec, strict=True) if r["n"] == 0]}
    rows = [rate_row("all", int(found.sum()), n)]
    for lo, hi in AGE_GROUPS:
        g = np.array([lo <= r["age"] <= hi for r in rec])
        rows.append(rate_row(f"age {lo}-{hi}" if hi < 200 else f"age {lo}+",
                             int((found & g).sum()), int(g.sum())))
    for k, name in enumerate(RACES):
        g = np.array([r["race"] == k for r in rec])
        rows.append(rate_row(f"race {k} {name}", int((found & g).sum()), int(g.sum())))
    g = np.array([r["race"] is None for r in rec])
    if g.any():
        rows.append(rate_row("race missing", int((found & g).sum()), int(g.sum())))
    for k, name in enumerate(("male", "female")):
        g = np.array([r["gender"] == k for r in rec])
        rows.append(rate_row(f"gender {k} {name}", int((found & g).sum()), int(g.sum())))
    for lo, hi in ((0, 2), (3, 9)):  # the youngest, where detectors often miss
        g = np.array([lo <= r["age"] <= hi for r in rec])
        rows.append(rate_row(f"  age {lo}-{hi}", int((found & g).sum()), int(g.sum())))
    table(["group", "photos", "found", "rate", "95 % CI"], rows)
    for r in rows:
        out["groups"][r[0].strip()] = {"photos": r[1], "found": r[2]}
    for thr in (0.7, 0.9):
        k = sum(r["score"] > thr for r in rec)
        out[f"rate_score_above_{thr}"] = k / n
        print(f"found with score > {thr}: {100 * k / n:.1f} %")
    print()
    return out


# ---------------------------------------------------------------- 6. speed by photo size

def speed(root: Path, runs: int) -> dict:
    src_path = sorted((root / "celeba-6k" / "img_align_celeba").glob("*.jpg"))[0]
    with Image.open(src_path) as im:
        src = im.convert("RGB")
    tpl = get_template("celeba", int(SIDE))
    rows, out = [], {"photo": src_path.name, "runs": runs}
    for w, h in SPEED_SIZES:
        k = 0.8 * h / src.height  # the CelebA photo, 80 % of the canvas's height, centred
        face = src.resize((round(src.width * k), round(src.height * k)), Image.Resampling.LANCZOS)
        img = Image.new("RGB", (w, h), (128, 128, 128))
        img.paste(face, ((w - face.width) // 2, (h - face.height) // 2))
        times = {"detect": [], "detect+align 64": [], "detect+align 128": [], "align 64": []}
        faces = detect_faces(img, DETECTOR)  # warm up
        for _ in range(runs):
            t = time.perf_counter()
            faces = detect_faces(img, DETECTOR)
            times["detect"].append(time.perf_counter() - t)
            for s in (64, 128):
                t = time.perf_counter()
                face_crop(img, tpl, s, detector=DETECTOR)
                times[f"detect+align {s}"].append(time.perf_counter() - t)
            _, f = pick_face(faces)
            t = time.perf_counter()
            align_face(img, f, tpl, 64)
            times["align 64"].append(time.perf_counter() - t)
        med = {key: statistics.median(v) for key, v in times.items()}
        searched = min(1.0, DETECT_MAX_SIDE / max(w, h))
        rows.append([f"{w}x{h}", f"{round(w * searched)}x{round(h * searched)}",
                     f"{faces[0].eye_distance:.0f}", len(faces)]
                    + [f"{med[key]:.4f}" for key in times])
        out[f"{w}x{h}"] = med
    print(f"## Seconds per photo by size (median of {runs} runs, {os.environ['OMP_NUM_THREADS']}"
          f" thread(s)); {src_path.name} enlarged to 80 % of the height, on grey\n")
    table(["photo", "searched at", "eye dist px", "faces", *times], rows)
    return out


def dlib_version() -> str | None:
    try:
        return version("dlib-bin")
    except PackageNotFoundError:
        return None


def machine() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("\n"):
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} CPUs"
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", metavar="SECTION",
                   help=f"what to measure: {', '.join(SECTIONS)} (default: all) or "
                        "template (only the mean landmarks of celeba-6k, MEAN_FACE's form)")
    p.add_argument("--data", default="../shared/datasets",
                   help="the folder holding celeba-6k and utkface")
    p.add_argument("--limit", type=int, help="at most N photos of each set (evenly spaced)")
    p.add_argument("--hq-heldout", default="~/data/celebahq128/heldout",
                   help="celebahq-128 photos the celebahq template was not fitted on: what the "
                        "celebahq section measures (default: %(default)s)")
    p.add_argument("--hq-train", default="~/data/celebahq128/train",
                   help="the celebahq-128 photos the template is fitted on (default: "
                        "%(default)s)")
    p.add_argument("--hq-every", type=int, default=9,
                   help="fit on every N-th sorted photo of --hq-train (default 9: 2,000 of "
                        "18,000, as CELEBAHQ_FACE)")
    p.add_argument("--dlib-every", type=int, default=4,
                   help="the dlib section's photos: every N-th of celeba-6k (default 4)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per photo size")
    p.add_argument("--out", help="save the results as JSON")
    args = p.parse_args()
    sections = args.sections or list(SECTIONS)
    for s in sections:
        if s not in (*SECTIONS, "template"):
            p.error(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}, template")
    root = Path(args.data).expanduser()
    started = datetime.now(timezone.utc)
    info = {"date": started.isoformat(timespec="seconds"), "machine": machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "yuface": version("yuface"), "dlib-bin": dlib_version(), "numpy": version("numpy"),
            "pillow": version("pillow"), "python": platform.python_version(),
            "limit": args.limit}
    print(f"# bench/faces.py: {info['date']}, {info['machine']}, OMP_NUM_THREADS="
          f"{info['omp_num_threads']}, yuface {info['yuface']}, dlib-bin {info['dlib-bin']}, "
          f"Pillow {info['pillow']}\n")
    results: dict = {"info": info}
    t0 = time.perf_counter()
    if "template" in sections:
        results["template"] = celeba(root, args.limit, only_template=True)
    if "celeba" in sections:
        results["celeba"] = celeba(root, args.limit)
    if "celebahq" in sections:
        results["celebahq"] = celebahq(Path(args.hq_heldout).expanduser(),
                                       Path(args.hq_train).expanduser(), args.limit,
                                       args.hq_every)
    if "dlib" in sections:
        results["dlib"] = dlib_fallback(root, args.limit, args.dlib_every)
    if "resample" in sections:
        results["resample"] = resample(root, args.limit)
    if "utkface" in sections:
        results["utkface"] = utkface(root, args.limit)
    if "speed" in sections:
        results["speed"] = speed(root, args.runs)
    info["seconds"] = time.perf_counter() - t0
    print(f"total {info['seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
