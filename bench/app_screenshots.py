"""Screenshots of `facediff app` for the docs, taken in headless Chromium (run by hand).

Not a benchmark: the script that made docs/images/app_*.png, so they can be made again.

    python bench/app_screenshots.py MODEL --photo FACE.jpg --out docs/images
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from facediff.api import load
from facediff.app.logic import Limits, Session
from facediff.app.ui import launch

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--photo", help="a face photo for the edit tab")
    p.add_argument("--out", default="docs/images")
    p.add_argument("--port", type=int, default=7870)
    p.add_argument("--attr", default="Smiling", help="binary attribute to switch on")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    session = Session(load(args.model, device="cpu"), Limits())
    launch(session, port=args.port, block=False)
    url = f"http://127.0.0.1:{args.port}/"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(300_000)
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#generate").wait_for()

        def number(elem_id: str, value: int) -> None:
            box = page.locator(f"#{elem_id} input")
            box.fill(str(value))
            box.press("Tab")

        # a live preview: a long DDPM run, captured mid-way
        number("n-images", 16)
        number("steps", 250)
        page.get_by_label("Sampler").first.click()
        page.get_by_role("option", name="ddpm", exact=True).click()
        page.locator("#generate").click()
        page.wait_for_function(
            "() => document.querySelector('#info')?.innerText.includes('step 1')")
        time.sleep(1.0)
        page.screenshot(path=str(out / "app_preview.png"))
        page.locator("#stop").click()
        time.sleep(1.0)

        # a finished grid with one attribute on
        page.get_by_label("Sampler").first.click()
        page.get_by_role("option", name="dpmpp", exact=True).click()
        number("steps", 25)
        number("seed", 3)
        group = page.locator(".block", has_text=args.attr).last
        group.get_by_role("radio", name="on", exact=True).check()
        page.locator("#generate").click()
        page.wait_for_function(
            "() => document.querySelector('#info')?.innerText.includes('seed 3')")
        page.screenshot(path=str(out / "app_generate.png"))

        # an out-of-range request
        number("n-images", 500)
        page.locator("#generate").click()
        page.get_by_text("Number of images must be between").first.wait_for()
        time.sleep(1.0)
        page.screenshot(path=str(out / "app_error.png"))

        # interpolation along the attribute
        page.reload(wait_until="domcontentloaded")
        page.get_by_role("tab", name="Interpolate").click()
        page.get_by_role("radio", name="along an attribute").check()
        page.get_by_label("Attribute to sweep").click()
        page.get_by_role("option", name=args.attr, exact=True).click()
        page.locator("#interpolate").click()
        page.wait_for_function(
            "() => document.querySelector('#interp-info')?.innerText.includes('frames')")
        time.sleep(1.0)
        page.screenshot(path=str(out / "app_interpolate.png"))

        if args.photo:
            page.reload(wait_until="domcontentloaded")
            page.get_by_role("tab", name="Edit a photo").click()
            page.locator("input[type=file]").first.set_input_files(args.photo)
            time.sleep(1.0)
            tab = page.locator("#edit").locator("xpath=ancestor::div[contains(@class,'column')]")
            tab.locator(".block", has_text=args.attr).last.get_by_role(
                "radio", name="on", exact=True).check()
            page.locator("#edit").click()
            page.wait_for_function(
                "() => document.querySelector('#edit-info')?.innerText.includes('after')")
            time.sleep(1.0)
            page.screenshot(path=str(out / "app_edit.png"), full_page=True)
        browser.close()
    print(f"wrote screenshots to {out}")


if __name__ == "__main__":
    main()
