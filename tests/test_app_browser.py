"""The web app end to end: `facediff app` on a tiny model, driven in headless Chromium.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the Python package
``playwright`` (``.ci/run`` installs all three); Playwright never downloads a browser here.
Without them the test is skipped locally and fails in CI (CI=true), so it cannot go quiet.
The app is shared by the tests of this module; the last one stops it (SIGTERM).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facediff.eval.classifier import save_classifier
from tests.test_app import tiny_model
from tests.test_like import _rigged_classifier

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000
UPLOAD_MB = 1  # the app's --max-upload-mb here


def _requirements() -> str | None:
    try:
        import gradio  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    """`facediff app` running in a subprocess, with its temporary folders."""

    url: str
    proc: subprocess.Popen
    log: Path
    out_dir: Path  # the grids users download (named in the app's log)
    cache: Path  # Gradio's cache (GRADIO_TEMP_DIR): uploads and the copies it serves

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    missing = _requirements()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    model_dir = tiny_model(True).save(tmp_path_factory.mktemp("model") / "tiny")
    # its classifier reads every photo as Smiling=1, hair=red ("Faces like this photo")
    save_classifier(_rigged_classifier([1, 2]), model_dir / "classifier")
    port = _free_port()
    log = tmp_path_factory.mktemp("log") / "app.log"
    cache = tmp_path_factory.mktemp("gradio")
    # a closed page is noticed at the next heartbeat: 1 s here instead of Gradio's 15 s
    env = {**os.environ, "NO_PROXY": "*", "GRADIO_TEMP_DIR": str(cache),
           "GRADIO_HEARTBEAT_INTERVAL": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facediff", "app", str(model_dir), "--device", "cpu",
             "--port", str(port), "--max-images", "8", "--max-steps", "20",
             "--max-upload-mb", str(UPLOAD_MB)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    running = None
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"the app did not start in 120 s:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
        found = re.search(r"grids for download are written to (\S+)", log.read_text())
        assert found, log.read_text()[-2000:]
        running = App(url, proc, log, Path(found.group(1)), cache)
        yield running
    finally:
        if running is None:
            proc.kill()
            proc.wait()
        else:
            running.stop()


@pytest.fixture(scope="module")
def app_url(app: App) -> str:
    return app.url


@pytest.fixture(scope="module")
def browser(app_url: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#generate").wait_for()
    return page


def _set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")  # commit the value as a user leaving the field would


def _generated_size(page) -> list[int]:
    page.wait_for_function(
        "() => document.querySelector('#info')?.innerText.includes('seed')")
    img = page.locator("#output-image img").first
    img.wait_for()
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle())
    return img.evaluate("e => [e.naturalWidth, e.naturalHeight]")


def test_generate_shows_a_grid_of_the_right_size(browser, app_url: str):
    page = _open(browser, app_url)
    assert page.get_by_text("conditional on 2 attributes").count() == 1
    _set_number(page, "n-images", 4)
    _set_number(page, "steps", 3)
    page.get_by_role("radio", name="on", exact=True).first.check()  # Smiling: on
    page.locator("#generate").click()
    # 4 faces of 16 px: a 2 x 2 grid with 2 px padding (38 px), shown 8x (128 px faces)
    assert _generated_size(page) == [304, 304]
    info = page.locator("#info").inner_text()
    assert "4 images" in info and "Smiling=1" in info and "seed 0" in info
    assert page.locator("#download a").count() >= 1  # the full-resolution grid to download
    page.close()


def test_out_of_range_input_shows_the_message(browser, app_url: str):
    page = _open(browser, app_url)
    _set_number(page, "n-images", 999)
    page.locator("#generate").click()
    page.get_by_text("Number of images must be between 1 and 8").first.wait_for()
    assert page.locator("#output-image img").count() == 0  # nothing was generated
    page.close()


def test_concurrent_users_are_queued_not_crashed(browser, app_url: str):
    pages = [_open(browser, app_url) for _ in range(2)]
    for seed, page in enumerate(pages):
        _set_number(page, "n-images", 1)
        _set_number(page, "steps", 20)
        _set_number(page, "seed", seed)
    for page in pages:  # both requests in flight at once
        page.locator("#generate").click()
    for page in pages:
        assert _generated_size(page) == [160, 160]  # one 16 px face + padding, 8x
    seeds = [p.locator("#info").inner_text() for p in pages]
    assert "seed 0" in seeds[0] and "seed 1" in seeds[1]
    for page in pages:
        page.close()


def _upload(url: str, size: int) -> tuple[int, str]:
    """POST a file of ``size`` bytes to Gradio's upload route, as the page does."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"face.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + \
        b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}gradio_api/upload", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_an_upload_over_the_cap_is_refused(browser, app: App, tmp_path: Path):
    # straight to the server, as a client skipping the page's own check would
    status, text = _upload(app.url, UPLOAD_MB * 2**20 + 1)
    assert (status, text) == (413, "File size exceeded maximum allowed size of 1048576 bytes.")
    status, text = _upload(app.url, 1000)
    assert status == 200 and len(json.loads(text)) == 1
    # and on the page, with a message
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (UPLOAD_MB * 2**20 + 1))
    page = _open(browser, app.url)
    page.get_by_role("tab", name="Edit a photo").click()
    page.locator("#photo input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size of 1.0 Mb").first.wait_for()
    page.close()


def test_faces_like_an_uploaded_photo(browser, app_url: str, tmp_path: Path):
    import numpy as np
    from PIL import Image

    photo = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(photo)
    page = _open(browser, app_url)
    page.get_by_role("tab", name="Edit a photo").click()
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.locator("#like").click()  # aligned by default: noise has no face
    page.get_by_text("No face found in the photo: untick").first.wait_for()
    page.locator("#align input").uncheck()
    page.locator("#like").click()
    page.wait_for_function(
        "() => document.querySelector('#edit-info')?.innerText.includes('seed')")
    info = page.locator("#edit-info").inner_text()
    assert "read: Smiling=1" in info and "hair=red" in info and "Smiling=1 hair=red" in info
    assert page.locator("#edit-output img").count() == 1
    page.close()


def test_closing_a_page_removes_its_grids(browser, app: App):
    before = set(app.out_dir.iterdir()) if app.out_dir.exists() else set()
    page = _open(browser, app.url)
    _set_number(page, "n-images", 1)
    _set_number(page, "steps", 2)
    page.locator("#generate").click()
    assert _generated_size(page) == [160, 160]
    (folder,) = set(app.out_dir.iterdir()) - before  # this page's own folder
    assert [p.suffix for p in folder.iterdir()] == [".png"]
    page.close()
    deadline = time.time() + 20
    while folder.exists():
        assert time.time() < deadline, "the closed page's folder was not removed in 20 s"
        time.sleep(0.2)


def test_stopping_the_app_removes_its_temporary_files(app: App):
    """Runs last: it stops the app the other tests use."""
    assert _upload(app.url, 1000)[0] == 200  # at least one file in Gradio's cache
    assert app.out_dir.is_dir()
    assert any(p.is_file() for p in app.cache.rglob("*"))  # uploads and grids Gradio served
    assert app.stop() == 0, app.log.read_text()[-2000:]
    assert not app.out_dir.exists()
    assert [p for p in app.cache.rglob("*") if p.is_file()] == []
