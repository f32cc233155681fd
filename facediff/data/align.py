"""A folder of photos in, a folder of aligned face crops out (``facediff data align``).

Every image under the source folder (recursive, ``IMAGE_EXTENSIONS``) is opened upright
(``open_photo``), its faces found (``detect_faces``) and aligned to a template
(``align_face``); the crops are PNGs at the same relative paths under the output folder
(``a/b/photo.jpg`` -> ``a/b/photo.png``; with ``all_faces`` every face, ``photo_1.png``,
``photo_2.png``, ... numbered left to right; else the largest face, as ``pick_face`` picks).
Two photos that would give the same name (``photo.jpg`` and ``photo.png`` in one folder) keep
their extension: ``photo.jpg.png`` and ``photo.png.png``.

A face whose crop would be enlarged more than ``MAX_UPSCALE`` from the photo is skipped as too
small (the rule ``face_crop`` applies); a photo that cannot be read is skipped with its reason.
Neither stops the run.

Files beside the crops (none is an image, so the folder source reads only the crops):

- ``align_manifest.json``: the settings (template, size, detector, all_faces); a later run
  with other settings is refused rather than mixing two kinds of crop in one folder.
- ``align_progress.jsonl``: one line per finished photo (its size and mtime, what it gave),
  appended once its crops are in place. A photo is done when it has a line, the photo's size
  and mtime are unchanged and every crop the line names exists; a rerun does only the rest.
  Crops are written atomically (``facediff.atomic``), so an interrupted run leaves no
  half-written PNG.
- ``align_report.csv``: every photo that was skipped in whole or part (no face, too small,
  unreadable), rewritten at the end of each run.

Work is spread over processes (``ProcessPoolExecutor``, spawned: no fork of a process that
may hold threads; each worker loads the detector once, and starting one costs an import of
facediff, a few seconds); ``workers=1`` runs in the calling process. As with any spawned pool,
a script that calls ``align_folder`` with workers needs the ``if __name__ == "__main__":``
guard.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facediff import atomic
from facediff.data.sources.folder import IMAGE_EXTENSIONS, find_images
from facediff.errors import FacediffError

MANIFEST = "align_manifest.json"
PROGRESS = "align_progress.jsonl"
REPORT = "align_report.csv"
MANIFEST_VERSION = 1
# the settings a resumed run must share with the first one
KEYED = ("template", "size", "detector", "all_faces", "celeba_crop")
REPORT_COLUMNS = ("photo", "reason", "faces_found", "crops_written", "detail")
NO_FACE, TOO_SMALL, UNREADABLE, OK = "no face", "too small", "unreadable", "ok"


@dataclass(frozen=True)
class AlignSettings:
    """What a crop is: ``template`` (``ffhq``: the FFHQ crop, the whole head with a margin,
    what folder-trained models default to; ``celeba``: the tighter CelebA crop a model
    trained on CelebA with ``celeba_crop`` sees; ``celebahq``: celebahq-128's close crop),
    ``size`` px square, found by
    ``detector`` (auto, yuface, dlib), the largest face or ``all_faces``."""

    size: int = 128
    template: str = "ffhq"
    detector: str = "auto"
    all_faces: bool = False
    celeba_crop: int = 140


@dataclass
class AlignReport:
    """What a run did (counts over every photo in the source, this run's and earlier ones)."""

    src: Path
    dst: Path
    settings: AlignSettings
    photos: int = 0
    crops: int = 0
    no_face: int = 0
    too_small: int = 0  # faces
    unreadable: int = 0
    done_before: int = 0  # photos an earlier run had done
    processed: int = 0  # photos this run did
    seconds: float = 0.0
    workers: int = 1
    skipped: list[dict[str, Any]] = field(default_factory=list)  # the report's rows

    @property
    def report_path(self) -> Path:
        return self.dst / REPORT

    def text(self) -> str:
        s = self.settings
        crops = "face crop" if self.crops == 1 else "face crops"
        line = (f"{self.photos} photo{'s' if self.photos != 1 else ''} in {self.src} -> "
                f"{self.crops} {crops} ({s.template} template, {s.size} px, detector {s.detector}"
                f"{', every face' if s.all_faces else ''}) in {self.dst}: "
                f"no face in {self.no_face}, {self.too_small} "
                f"face{'s' if self.too_small != 1 else ''} too small, "
                f"{self.unreadable} unreadable.")
        if self.processed:
            per = self.seconds / self.processed
            line += (f" {self.processed} done in this run ({per:.2f} s per photo, "
                     f"{self.workers} worker{'s' if self.workers != 1 else ''})")
            line += f", {self.done_before} by an earlier one." if self.done_before else "."
        else:
            line += " Nothing to do: every photo was done by an earlier run."
        if self.skipped:
            line += f" Photos skipped and why: {self.report_path}."
        if self.crops:
            line += f" Train on it with `facediff train --data {self.dst}"
            line += (f" --set data.face_template={s.template}`." if s.template != "ffhq"
                     else "`.")
        return line


# ---- one photo --------------------------------------------------------------------------------
class _Aligner:
    """Turns one photo into its crops (in a worker, or in the calling process)."""

    def __init__(self, settings: AlignSettings) -> None:
        from facediff.faces import get_detector, get_template

        self.settings = settings
        self.template = get_template(settings.template, settings.celeba_crop)
        self.detect = get_detector(settings.detector)[1]

    def __call__(self, job: tuple[str, str, str, str]) -> dict[str, Any]:
        import numpy as np

        from facediff.faces import align_face, detect_faces, open_photo, pick_face
        from facediff.faces.photo import MAX_UPSCALE

        photo_path, rel, dst, stem = job
        s = self.settings
        record: dict[str, Any] = {"photo": rel, "bytes": None, "mtime_ns": None,
                                  "status": OK, "faces": 0, "written": [], "too_small": 0,
                                  "reason": ""}
        try:
            st = os.stat(photo_path)
            record.update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
            photo = open_photo(photo_path)
        except (FacediffError, OSError) as e:
            record.update(status=UNREADABLE, reason=str(e).splitlines()[0] if str(e) else
                          type(e).__name__)
            return record
        faces = detect_faces(photo, self.detect)
        record["faces"] = len(faces)
        if not faces:
            record.update(status=NO_FACE, reason="no face found")
            return record
        chosen = list(enumerate(faces, 1)) if s.all_faces else [pick_face(faces)]
        small = []
        for k, face in chosen:
            m = self.template.matrix(face.landmarks)  # photo px -> unit crop (face_crop's rule)
            side = 1.0 / float(np.hypot(*m[0, :2]))
            if s.size / side > MAX_UPSCALE:
                small.append(f"{f'face {k}' if s.all_faces else 'the largest face'}: its "
                             f"crop is {side:.0f} px of the photo, enlarged "
                             f"{s.size / side:.1f}x (at most {MAX_UPSCALE:g}x)")
                continue
            name = f"{stem}_{k}.png" if s.all_faces else f"{stem}.png"
            crop = align_face(photo, face, self.template, s.size, index=k).image
            atomic.write_with(Path(dst) / name, lambda f, c=crop: c.save(f, format="PNG"))
            record["written"].append(name)
        record["too_small"] = len(small)
        if small:
            record["reason"] = (f"too small for a {s.size} px crop: " + "; ".join(small)
                                + (f" ({len(faces)} faces found)" if s.all_faces else ""))
            if not record["written"]:
                record["status"] = TOO_SMALL
        return record


_worker: _Aligner | None = None


def _init_worker(settings: AlignSettings) -> None:
    import signal

    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _worker = _Aligner(settings)


def _work(job: tuple[str, str, str, str]) -> dict[str, Any]:
    assert _worker is not None, "the worker was not initialised"
    return _worker(job)


# ---- the folder ------------------------------------------------------------------------------
def _photos(src: Path, dst: Path) -> list[Path]:
    """The photos under ``src``, less any under ``dst`` (the output may sit inside it)."""
    if not src.exists():
        raise FacediffError(f"photo folder not found: {src}")
    if not src.is_dir():
        raise FacediffError(f"{src} is not a folder (pass a folder of photos)")
    rs, rd = src.resolve(), dst.resolve()
    if rs == rd:
        raise FacediffError(f"--out {dst} is the photo folder itself; name another folder")
    if rd in rs.parents:
        raise FacediffError(f"the photo folder {src} is inside --out {dst}; training on --out "
                            "would read the photos too: name another --out")
    files = find_images(src)
    inside = rd.relative_to(rs).parts if rs in rd.parents else None
    if inside:
        files = [p for p in files if p.relative_to(src).parts[:len(inside)] != inside]
        if not files:
            raise FacediffError(f"no photos in {src} outside --out {dst} (looked recursively "
                                f"for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def _detector_name(name: str) -> str:
    """The detector ``name`` (auto: the first installed) is; none installed: how to get one."""
    from facediff.faces import get_detector
    from facediff.faces.detect import DETECTORS, INSTALL_HINT

    try:
        return get_detector(name)[0]
    except FacediffError:
        if name not in ("auto", *DETECTORS):
            raise
        what = "no face detector is installed" if name == "auto" else f"{name} is not installed"
        raise FacediffError(f"aligning faces needs a detector, and {what}: {INSTALL_HINT}") \
            from None


def output_stems(rels: Iterable[str]) -> dict[str, str]:
    """Each photo's crop name (relative, without ``.png`` or the face number): its own path
    less the extension, or, where two photos in a folder share a stem (case-insensitively),
    the path with the extension."""
    rels = list(rels)
    by_stem: dict[str, list[str]] = {}
    for r in rels:
        by_stem.setdefault(r.rsplit(".", 1)[0].lower(), []).append(r)
    stems = {r: (r if len(by_stem[r.rsplit(".", 1)[0].lower()]) > 1 else r.rsplit(".", 1)[0])
             for r in rels}
    seen: dict[str, str] = {}
    for r, s in stems.items():
        if s.lower() in seen:
            raise FacediffError(f"{r} and {seen[s.lower()]} would give the same crop name; "
                                "rename one")
        seen[s.lower()] = r
    return stems


def _check_manifest(dst: Path, settings: AlignSettings, src: Path) -> None:
    """Write the manifest, or check that an earlier run's matches these settings."""
    path = dst / MANIFEST
    wanted = {k: asdict(settings)[k] for k in KEYED}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            recorded = {k: old[k] for k in KEYED}
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise FacediffError(f"cannot read {path} ({e}); remove it to start --out afresh, "
                                "or name another --out") from None
        if recorded != wanted:
            diff = ", ".join(f"{k} {recorded[k]} (now {wanted[k]})" for k in KEYED
                             if recorded[k] != wanted[k])
            raise FacediffError(f"--out {dst} holds crops made with other settings: {diff}; "
                                "rerun with the same settings to resume, or name another --out")
        return
    if dst.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in dst.rglob("*")):
        raise FacediffError(f"--out {dst} already holds images but no {MANIFEST} (not made by "
                            "`facediff data align`); name an empty or new folder")
    manifest = {"version": MANIFEST_VERSION, **wanted, "source": str(src.resolve())}
    atomic.write_text(path, json.dumps(manifest, indent=2) + "\n")


def _read_progress(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of each photo (a torn last line, from a crash, is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
            records[r["photo"]] = r
        except (ValueError, KeyError, TypeError):
            continue
    return records


def _end_last_line(path: Path) -> None:
    """End a crash's torn last line, so that the next record starts a line of its own."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _is_done(record: dict[str, Any] | None, photo: Path, dst: Path) -> bool:
    if record is None:
        return False
    try:
        st = photo.stat()
    except OSError:
        return False
    return (record.get("bytes") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns
            and all((dst / n).is_file() for n in record.get("written", [])))


def _report_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if r["status"] == OK and not r["too_small"]:
            continue
        reason = TOO_SMALL if r["status"] == OK else r["status"]
        rows.append({"photo": r["photo"], "reason": reason, "faces_found": r["faces"],
                     "crops_written": len(r["written"]), "detail": r["reason"]})
    return rows


def _write_report(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def _run_pool(jobs: list[tuple[str, str, str, str]], settings: AlignSettings,
              workers: int) -> Iterator[dict[str, Any]]:
    """Each job's record as it finishes, at most a few jobs per worker queued at a time."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(settings,)) as pool:
        pending: set[Future] = set()
        todo = iter(jobs)
        try:
            while True:
                for job in todo:
                    pending.add(pool.submit(_work, job))
                    if len(pending) >= 4 * workers:
                        break
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    yield f.result()
        except BrokenProcessPool:
            raise FacediffError("a worker process died (out of memory?); rerun to resume, "
                                "perhaps with fewer --workers") from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def align_folder(src: str | Path, dst: str | Path, settings: AlignSettings | None = None, *,
                 workers: int = 1, progress: bool = False) -> AlignReport:
    """Align the faces of every photo under ``src`` into ``dst`` (see the module's doc);
    photos an earlier run into ``dst`` finished are skipped. Bad input (``src`` missing or
    without images, ``dst`` made with other settings): a one-line ``FacediffError``."""
    from tqdm.auto import tqdm

    from facediff.faces import get_template

    s = settings or AlignSettings()
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    get_template(s.template, s.celeba_crop)  # an unknown name fails before any work
    files = _photos(src, dst)
    s = AlignSettings(s.size, s.template, _detector_name(s.detector), s.all_faces,
                      s.celeba_crop)  # the detector recorded is the one "auto" found
    dst.mkdir(parents=True, exist_ok=True)
    _check_manifest(dst, s, src)

    rels = [p.relative_to(src).as_posix() for p in files]
    stems = output_stems(rels)
    progress_path = dst / PROGRESS
    records = _read_progress(progress_path)
    jobs = [(str(p), r, str(dst), stems[r]) for p, r in zip(files, rels, strict=True)
            if not _is_done(records.get(r), p, dst)]
    report = AlignReport(src, dst, s, photos=len(files), done_before=len(files) - len(jobs))
    workers = max(1, min(workers, len(jobs)))
    report.workers = workers
    start = time.perf_counter()
    bar = tqdm(total=len(files), initial=report.done_before, desc="aligning", unit="photo",
               disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1:
            aligner = _Aligner(s)
            results: Iterable[dict[str, Any]] = (aligner(j) for j in jobs)
        else:
            results = _run_pool(jobs, s, workers)
        _end_last_line(progress_path)
        with open(progress_path, "a", encoding="utf-8") as log:
            for record in results:
                old = records.get(record["photo"])
                for name in set(old["written"] if old else ()) - set(record["written"]):
                    (dst / name).unlink(missing_ok=True)  # a redone photo's stale crops
                records[record["photo"]] = record
                log.write(json.dumps(record) + "\n")
                log.flush()
                report.processed += 1
                bar.update()
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start

    current = [records[r] for r in rels]
    report.crops = sum(len(r["written"]) for r in current)
    report.no_face = sum(r["status"] == NO_FACE for r in current)
    report.unreadable = sum(r["status"] == UNREADABLE for r in current)
    report.too_small = sum(r["too_small"] for r in current)
    report.skipped = _report_rows(current)
    _write_report(dst / REPORT, report.skipped)
    return report
