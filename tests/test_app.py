"""The web app's rules, without a browser (tests/test_app_browser.py drives the real page)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facediff.api import FaceModel
from facediff.app.logic import MB, Limits, Output, Preview, Session, upscale, with_previews
from facediff.config import Condition
from facediff.errors import FacediffError
from facediff.model import build_net
from facediff.viz.grid import make_grid
from tests.conftest import tiny_config

CONDS = [Condition("Smiling", "binary", ["0", "1"]),
         Condition("hair", "categorical", ["blond", "dark", "red"])]


def tiny_model(conditional: bool) -> FaceModel:
    cfg = tiny_config(None, "sample.steps=3")
    if conditional:
        cfg.conditions = list(CONDS)
    torch.manual_seed(0)
    net = build_net(cfg).eval().requires_grad_(False)
    if conditional:
        with torch.no_grad():
            for p in net.cond.parameters():
                p.normal_(std=1.0)  # make the conditions change the output
    # fp32: the tests compare images made in different batches, exact only in fp32 (bf16
    # rounding depends on the batch; tests/test_precision.py bounds that)
    return FaceModel(cfg, net, "tiny", precision="fp32")


@pytest.fixture(scope="module")
def cond_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return Session(tiny_model(True), Limits(max_images=8, max_steps=20, max_frames=6,
                                            preview_every_s=0.0),
                   out_dir=tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def plain_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return Session(tiny_model(False), Limits(max_images=8, max_steps=20),
                   out_dir=tmp_path_factory.mktemp("app"))


def test_requests_are_bounded_with_a_clear_message(cond_session: Session):
    s = cond_session
    assert s.check(8, 20, "dpmpp") == (8, 20)
    for n, steps, sampler, match in [
        (0, 5, "dpmpp", "Number of images must be between 1 and 8 .got 0"),
        (9, 5, "dpmpp", "Number of images must be between 1 and 8"),
        (2.5, 5, "dpmpp", "whole number"),
        (None, 5, "dpmpp", "Number of images is required"),
        (2, 21, "dpmpp", "Steps must be between 1 and 20"),
        (2, 0, "dpmpp", "Steps must be between 1 and 20"),
        (2, 5, "plms", "Unknown sampler"),
    ]:
        with pytest.raises(FacediffError, match=match):
            s.check(n, steps, sampler)
    with pytest.raises(FacediffError, match="Guidance must be between 0 and 20"):
        s.check(2, 5, "ddim", guidance=-1)
    with pytest.raises(FacediffError, match="Seed must be between"):
        s.pick_seed(-3, False)
    # a bad request fails before any sampling starts
    with pytest.raises(FacediffError, match="Number of images"):
        next(s.generate(1000, "dpmpp", 3, 0))


def test_tri_state_controls_become_requests(cond_session: Session):
    s = cond_session
    assert s.conditions == [("Smiling", ["any", "on", "off"]),
                            ("hair", ["any", "blond", "dark", "red"])]
    assert s.attrs({"Smiling": "any", "hair": "any"}) == []
    assert s.attrs({"Smiling": "on", "hair": "red"}) == ["Smiling=1", "hair=red"]
    assert s.attrs({"Smiling": "off", "hair": "keep"}) == ["Smiling=0"]
    torch.testing.assert_close(cond_session.model.labels(s.attrs({"Smiling": "off"})),
                               torch.tensor([0, -1]))


def test_random_seed_is_reported_so_the_grid_can_be_made_again(cond_session: Session):
    seeds = {cond_session.pick_seed(0, True) for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 2**31 for s in seeds)
    assert cond_session.pick_seed(42, False) == 42


def _run(session: Session, *args, **kwargs) -> tuple[list[Preview], Output]:
    items = list(session.generate(*args, **kwargs))
    assert isinstance(items[-1], Output)
    assert all(isinstance(i, Preview) for i in items[:-1])
    return items[:-1], items[-1]  # type: ignore[return-value]


def test_generate_previews_then_a_grid_matching_the_api(cond_session: Session):
    previews, out = _run(cond_session, 4, "ddim", 5, 7, choices={"Smiling": "on"},
                         guidance=2.0)
    # a preview per step but the last (preview_every_s = 0), each the size of the result
    assert len(previews) == 4
    assert "step 1/5" in previews[0].info
    assert all(p.display.size == out.display.size for p in previews)
    # 4 faces of 16 px in a 2 x 2 grid with 2 px padding, shown 8x larger (128 px faces)
    assert out.display.size == (38 * 8, 38 * 8)
    saved = np.asarray(Image.open(out.path))
    assert saved.shape == (38, 38, 3) and saved.std() > 0
    assert "seed 7" in out.info and "Smiling=1" in out.info and "guidance 2.0" in out.info
    # the grid holds exactly what the Python API samples for the same request
    api = cond_session.model.sample_tensor(4, 5, "ddim", seed=7, attrs=["Smiling=1"],
                                           guidance=2.0)
    assert np.array_equal(saved[2:18, 2:18], api[0].numpy())
    # the attribute changes the faces
    _, off = _run(cond_session, 4, "ddim", 5, 7, choices={"Smiling": "off"}, guidance=2.0)
    assert not np.array_equal(np.asarray(Image.open(off.path)), saved)


def test_unconditional_model_ignores_no_controls(plain_session: Session):
    assert plain_session.conditions == []
    _, out = _run(plain_session, 1, "dpmpp", 3, 0)
    assert out.display.size == (20 * 8, 20 * 8)
    with pytest.raises(FacediffError, match="unconditional"):
        plain_session.edit("x.png", {}, method="ddim", steps=5, guidance=3.0)


def test_interpolation_strips(cond_session: Session):
    out = cond_session.interpolate("seeds", 0, 1, 3, sampler="ddim", steps=4)
    assert Image.open(out.path).size == (3 * 18 + 2, 20)
    assert "seed 0 → seed 1" in out.info
    out = cond_session.interpolate("attribute", 0, 0, 4, sampler="ddim", steps=4,
                                 attribute="hair", guidance=2.0)
    strip = np.asarray(Image.open(out.path)).astype(int)
    assert strip.shape == (20, 4 * 18 + 2, 3)
    assert np.abs(strip[:, 2:18] - strip[:, -18:-2]).mean() > 1  # blond differs from red
    with pytest.raises(FacediffError, match="Frames must be between 2 and 6"):
        cond_session.interpolate("seeds", 0, 1, 7, sampler="ddim", steps=4)


def test_edit_a_photo(cond_session: Session, tmp_path: Path):
    photo = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(photo)
    out = cond_session.edit(str(photo), {"Smiling": "on", "hair": "keep"}, method="ddim",
                            steps=4, guidance=2.0, align=False)
    assert Image.open(out.path).size == (30, 40)  # the whole photo, the edit pasted back
    assert out.display.size[0] > out.display.size[1]  # before | after
    assert "Smiling=1" in out.info and "centre crop" in out.info
    with pytest.raises(FacediffError, match=r'^No face found in the photo: untick "Find and '):
        cond_session.edit(str(photo), {"Smiling": "on"}, method="ddim", steps=4)
    with pytest.raises(FacediffError, match="Upload a photo"):
        cond_session.edit(None, {"Smiling": "on"}, method="ddim", steps=4, guidance=2.0)
    with pytest.raises(FacediffError, match="at least one attribute"):
        cond_session.edit(str(photo), {"Smiling": "keep"}, method="ddim", steps=4, guidance=2.0)
    with pytest.raises(FacediffError, match="cannot read photo"):
        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        cond_session.edit(str(bad), {"Smiling": "on"}, method="ddim", steps=4, guidance=2.0)


def test_edit_aligns_the_face_and_pastes_it_back(cond_session: Session, tmp_path: Path,
                                                 monkeypatch):
    """With a face found (a stub detector here; tests/test_faces.py runs the real one), the
    crop is the aligned face and only the pixels around it change."""
    from facediff.faces import Face
    from facediff.faces import detect as detect_module
    from facediff.faces.templates import MEAN_FACE

    landmarks = (MEAN_FACE - MEAN_FACE.mean(0)) * 0.4 + [150, 60]  # a face near the right
    monkeypatch.setitem(detect_module._loaded, "yuface",
                        lambda rgb: [Face((130, 40, 170, 80), 0.9, landmarks)])
    photo = tmp_path / "wide.png"
    arr = np.random.default_rng(2).integers(0, 255, (120, 200, 3), np.uint8)
    Image.fromarray(arr).save(photo)
    out = cond_session.edit(str(photo), {"Smiling": "on"}, method="ddim", steps=3)
    whole = np.asarray(Image.open(out.path))
    assert whole.shape == arr.shape and "face 1 found and aligned" in out.info
    np.testing.assert_array_equal(whole[:, :100], arr[:, :100])  # far from the face
    assert not np.array_equal(whole[40:80, 130:170], arr[40:80, 130:170])


def test_photos_are_edited_by_the_editor_when_there_is_one(cond_session: Session,
                                                           tmp_path: Path):
    """The app serving a distilled model edits with its teacher (Session.editor): the edit is
    the editor's own, pixel for pixel, and its default guidance is the editor's."""
    photo = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), np.uint8)).save(photo)
    other = tiny_model(True)
    with torch.no_grad():
        for p in other.net.parameters():
            p.add_(0.05)  # another model: different edits
    other.config.sample.guidance = 4.5
    both = Session(cond_session.model, cond_session.limits, out_dir=tmp_path / "a",
                   editor=other)
    alone = Session(other, cond_session.limits, out_dir=tmp_path / "b")
    args = dict(method="ddim", steps=4, align=False)
    got = np.asarray(Image.open(both.edit(str(photo), {"Smiling": "on"}, **args).path))
    want = np.asarray(Image.open(alone.edit(str(photo), {"Smiling": "on"}, **args).path))
    mine = np.asarray(Image.open(cond_session.edit(str(photo), {"Smiling": "on"}, **args).path))
    assert np.array_equal(got, want) and not np.array_equal(got, mine)
    assert both.edit_model is other and cond_session.edit_model is cond_session.model
    assert "guidance 4.5" in both.edit(str(photo), {"Smiling": "on"}, **args).info


def test_upscale_uses_whole_factors():
    img = Image.new("RGB", (38, 38))
    assert upscale(img, 16).size == (304, 304)
    assert upscale(img, 64).size == (76, 76)
    assert upscale(img, 128) is img


def test_closing_the_preview_stream_stops_the_sampler():
    steps_run = []
    finished = threading.Event()

    def work(callback):
        try:
            for i in range(1000):
                steps_run.append(i)
                callback(i, 1000, torch.tensor(0), torch.zeros(1), torch.zeros(1, 3, 2, 2))
                time.sleep(0.001)
        finally:
            finished.set()
        return torch.zeros(1)

    stream = with_previews(work, 0.0)
    first = next(stream)
    assert isinstance(first, tuple) and first[1] == 1000
    stream.close()  # the page went away
    assert finished.wait(5)
    assert len(steps_run) < 1000


def test_errors_in_the_sampler_reach_the_caller():
    def work(callback):
        raise FacediffError("broken")

    with pytest.raises(FacediffError, match="broken"):
        list(with_previews(work, 0.0))


def _photo(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(path)
    return path


def test_an_upload_over_the_cap_is_refused_before_it_is_read(tmp_path: Path):
    photo = _photo(tmp_path / "face.png")  # about 3.6 kB of noise
    size = photo.stat().st_size
    session = Session(tiny_model(True), Limits(max_upload_mb=(size - 1) / MB),
                      out_dir=tmp_path / "out")
    with pytest.raises(FacediffError, match=r"^The photo is 0\.00 MB; this app accepts photos "
                                            r"of at most [0-9.e-]+ MB\.$"):
        session.edit(str(photo), {"Smiling": "on"}, method="ddim", steps=2)
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written
    # a file exactly at the cap is accepted
    session = Session(session.model, Limits(max_upload_mb=size / MB), out_dir=tmp_path / "out")
    assert session.edit(str(photo), {"Smiling": "on"}, method="ddim", steps=2,
                        align=False).path.exists()


def test_each_page_has_a_folder_removed_when_it_closes(cond_session: Session, tmp_path: Path):
    s = Session(cond_session.model, cond_session.limits, out_dir=tmp_path / "out")
    _, a = _run(s, 1, "ddim", 2, 0, user="page-a")
    b = s.interpolate("seeds", 0, 1, 2, sampler="ddim", steps=2, user="page-b")
    e = s.edit(str(_photo(tmp_path / "face.png")), {"Smiling": "on"}, method="ddim",
               steps=2, align=False, user="page-b")
    assert a.path.parent == tmp_path / "out" / "page-a"
    assert b.path.parent == e.path.parent == tmp_path / "out" / "page-b"
    s.release("page-a")
    assert not a.path.parent.exists() and b.path.exists() and e.path.exists()
    # the session hash comes from the browser: it cannot name a folder outside out_dir
    outside = tmp_path / "keep"
    outside.mkdir()
    _, c = _run(s, 1, "ddim", 2, 0, user="../keep")
    assert c.path.parent.parent == tmp_path / "out"
    s.release("../keep")
    assert outside.exists() and not c.path.exists()
    s.release(None)  # a request without a page removes nothing
    assert b.path.exists()


def test_the_page_close_handler_and_the_cache_sweep_are_wired(cond_session: Session,
                                                              tmp_path: Path):
    gr = pytest.importorskip("gradio")
    from facediff.app.ui import DELETE_CACHE, build_app

    s = Session(cond_session.model, cond_session.limits, out_dir=tmp_path / "out")
    app = build_app(s)
    assert app.delete_cache == DELETE_CACHE
    (handler,) = [d.fn for d in app.fns.values() if any(t[1] == "unload" for t in d.targets)]
    _, a = _run(s, 1, "ddim", 2, 0, user="abc123")
    _, b = _run(s, 1, "ddim", 2, 0, user="other")
    handler(gr.Request(session_hash="abc123"))  # what Gradio calls when that page closes
    assert not a.path.exists() and b.path.exists()


def test_shutdown_removes_every_temporary_file(cond_session: Session, tmp_path: Path):
    pytest.importorskip("gradio")
    import atexit

    from facediff.app.ui import launch, shutdown

    s = Session(cond_session.model, cond_session.limits, out_dir=tmp_path / "out")
    _, a = _run(s, 1, "ddim", 2, 0, user="abc")
    _, b = _run(s, 1, "ddim", 2, 0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = launch(s, port=port, block=False)
    try:
        assert app.max_file_size == 20 * MB  # the upload cap reaches Gradio
    finally:
        shutdown(app, s)
    assert not a.path.exists() and not b.path.exists() and not s.out_dir.exists()
    assert not app.is_running
    assert atexit.unregister(s.close) is None  # nothing left to do at exit


def test_a_large_request_is_sampled_in_bounded_batches(tmp_path: Path):
    model = tiny_model(False)
    s = Session(model, Limits(max_images=8, max_steps=20, max_batch=3, preview_every_s=0.0),
                out_dir=tmp_path)
    sizes: list[int] = []
    hook = model.net.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        previews, out = _run(s, 7, "ddim", 3, 5)
    finally:
        hook.remove()
    assert sizes == [3] * 3 + [3] * 3 + [1] * 3  # three batches of at most 3, 3 steps each
    # the same images as the API gives for the same request in one batch
    saved = np.asarray(Image.open(out.path))
    api = model.sample_tensor(7, 3, "ddim", seed=5, batch_size=7)
    assert np.array_equal(saved, np.asarray(make_grid(api)))
    # the preview is the whole grid throughout, its progress counted per batch
    assert [p.info.split(" (")[0] for p in previews] == [
        f"denoising… batch {b}/3, step {i}/3" for b in (1, 2, 3) for i in (1, 2, 3)][:-1]
    assert all(p.display.size == out.display.size for p in previews)

    def cell(img: Image.Image, j: int) -> np.ndarray:  # face j of a 3-wide grid shown 8x
        grid = np.asarray(img)[::8, ::8]
        y, x = 2 + (j // 3) * 18, 2 + (j % 3) * 18
        return grid[y:y + 16, x:x + 16]

    assert (cell(previews[0].display, 6) == 128).all()  # not started yet: grey
    assert (cell(previews[0].display, 0) != 128).any()
    # a finished batch stays in the preview as it ended, close to the final faces
    assert np.array_equal(cell(previews[-1].display, 0), cell(previews[2].display, 0))
    assert np.abs(cell(previews[-1].display, 0).astype(int) - cell(out.display, 0)).mean() < 2
