"""The Gradio page: widgets wired to ``facediff.app.logic``; no sampling logic lives here."""

from __future__ import annotations

import atexit
import functools
import inspect
import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page

import gradio as gr

from facediff.app.logic import ANY, KEEP, Output, Preview, Session
from facediff.diffusion.editing import EDIT_STEPS
from facediff.diffusion.samplers import SAMPLERS
from facediff.errors import FacediffError

# system fonts only: the page must not wait on a font server it cannot reach
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
CSS = "#info, #interp-info, #edit-info {min-height: 2em}"
# Gradio's cache (uploads and the copies of the grids it serves): every 15 minutes, delete what
# is older than an hour; all of it at shutdown. A download link stays valid for an hour.
DELETE_CACHE = (15 * 60, 60 * 60)


def _attribute_controls(session: Session, first: str) -> list[gr.components.Component]:
    """One control per condition: radio buttons for a few values, a dropdown for many."""
    controls = []
    with gr.Row(equal_height=False):
        for name, choices in session.conditions:
            choices = [first if c == ANY else c for c in choices]
            if len(choices) <= 4:
                controls.append(gr.Radio(choices, value=first, label=name, min_width=240))
            else:
                controls.append(gr.Dropdown(choices, value=first, label=name, min_width=240))
    return controls


def _errors_shown(fn: Any) -> Any:
    """FacediffError -> a message on the page (gr.Error) instead of a generic failure."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args: Any) -> Iterator[Any]:
            try:
                yield from fn(*args)
            except FacediffError as e:
                raise gr.Error(str(e), print_exception=False) from None
        return gen

    @functools.wraps(fn)
    def plain(*args: Any) -> Any:
        try:
            return fn(*args)
        except FacediffError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return plain


def build_app(session: Session) -> gr.Blocks:
    """The page for one model: Generate, Interpolate and (conditional models) Edit tabs.

    Each page's grids go to its own folder (``Session.folder(session_hash)``), removed when the
    page closes; Gradio's cache is swept on the schedule ``DELETE_CACHE``."""
    with gr.Blocks(title="facediff", analytics_enabled=False,
                   delete_cache=DELETE_CACHE) as app:
        gr.Markdown(f"## facediff\n{session.summary()}")
        with gr.Tabs():
            _generate_tab(session)
            _interpolate_tab(session)
            _edit_tab(session)

        def page_closed(request: gr.Request) -> None:
            session.release(request.session_hash)

        app.unload(page_closed)
    return app


def _names(session: Session) -> list[str]:
    return [name for name, _ in session.conditions]


def _generate_tab(session: Session) -> None:
    """Generate: settings and attributes on the left, live previews then the grid right."""
    defaults, lim, names = session.model.settings(), session.limits, _names(session)
    conditional = bool(names)
    # Lay out the widgets.
    with gr.Tab("Generate"), gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown(session.note, visible=bool(session.note), elem_id="model-note")
            n = gr.Number(16, label=f"Number of images (1-{lim.max_images})",
                          precision=0, elem_id="n-images")
            sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler")
            steps = gr.Number(defaults.steps, label=f"Steps (1-{lim.max_steps})",
                              precision=0, elem_id="steps")
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                randomize = gr.Checkbox(False, label="Random seed")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", elem_id="stop")
            guidance = gr.Slider(0, 10, value=defaults.guidance, step=0.5,
                                 label="Guidance (0 = ignore the attributes, 1 = plain "
                                       "conditional, higher = stronger)",
                                 visible=conditional)
            with gr.Accordion("Attributes (any / on / off)", open=len(names) <= 12,
                              visible=conditional):
                attrs = _attribute_controls(session, ANY)
        with gr.Column(scale=2):
            image = gr.Image(label="Faces", type="pil", format="png",
                             interactive=False, elem_id="output-image")
            info = gr.Markdown(elem_id="info")
            download = gr.File(label="Download the grid (PNG, full resolution)",
                               elem_id="download")

    # Wire them: check the fields before the queue, then stream previews and the grid.
    @_errors_shown
    def run_generate(request: gr.Request, n_: float, sampler_: str, steps_: float,
                     seed_: float, randomize_: bool, guidance_: float,
                     *values: str) -> Iterator[Any]:
        for item in session.generate(n_, sampler_, steps_, seed_, randomize=randomize_,
                                     guidance=guidance_ if conditional else None,
                                     choices=dict(zip(names, values, strict=True)),
                                     user=request.session_hash):
            if isinstance(item, Preview):
                # no download while the faces are not final; and not gr.skip() for the file:
                # Gradio then serves the next one from an unlisted copy of the component,
                # whose files its cache sweep (delete_cache) never deletes
                yield item.display, None, item.info, gr.skip()
            else:
                yield item.display, str(item.path), item.info, item.seed

    def check_generate(n_: float, sampler_: str, steps_: float, seed_: float,
                       randomize_: bool, guidance_: float, *values: str) -> list[Any]:
        """Runs before the queue: a message beside each wrong field."""
        bad = session.problems(n_, steps_, sampler_, seed=seed_, randomize=randomize_)
        keys = ["n", "sampler", "steps", "seed", "randomize", "guidance"]
        return [gr.validate(k not in bad, bad.get(k, "")) for k in keys] + \
            [gr.validate(True, "") for _ in values]

    event = go.click(run_generate, [n, sampler, steps, seed, randomize, guidance, *attrs],
                     [image, download, info, seed], concurrency_id="model",
                     validator=check_generate)
    stop.click(None, cancels=[event])


def _interpolate_tab(session: Session) -> None:
    """Interpolate: between two seeds, or (conditional models) along one attribute."""
    defaults, lim, names = session.model.settings(), session.limits, _names(session)
    conditional = bool(names)
    # Lay out the widgets.
    with gr.Tab("Interpolate"), gr.Row():
        with gr.Column(scale=1, min_width=300):
            modes = ["between seeds", *(["along an attribute"] if conditional else [])]
            mode = gr.Radio(modes, value=modes[0], label="Interpolate")
            with gr.Row():
                seed_a = gr.Number(0, label="Seed A", precision=0)
                seed_b = gr.Number(1, label="Seed B", precision=0)
            attribute = gr.Dropdown(names, value=names[0] if names else None,
                                    label="Attribute to sweep", visible=conditional)
            frames = gr.Slider(2, lim.max_frames, value=min(8, lim.max_frames), step=1,
                               label="Frames")
            sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler")
            steps = gr.Number(defaults.steps, label=f"Steps (1-{lim.max_steps})",
                              precision=0)
            guidance = gr.Slider(0, 10, value=defaults.guidance, step=0.5,
                                 label="Guidance", visible=conditional)
            go = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
        with gr.Column(scale=2):
            strip = gr.Image(label="Interpolation", type="pil", format="png",
                             interactive=False, elem_id="interp-image")
            info = gr.Markdown(elem_id="interp-info")
            download = gr.File(label="Download the strip (PNG)")

    # Wire them.
    @_errors_shown
    def run_interpolate(request: gr.Request, mode_: str, a: float, b: float,
                        attribute_: str | None, frames_: float, sampler_: str, steps_: float,
                        guidance_: float) -> tuple[Any, str, str]:
        out: Output = session.interpolate(
            "attribute" if mode_ == "along an attribute" else "seeds", a, b, frames_,
            sampler=sampler_, steps=steps_, attribute=attribute_,
            guidance=guidance_ if conditional else None, user=request.session_hash)
        return out.display, str(out.path), out.info

    go.click(run_interpolate, [mode, seed_a, seed_b, attribute, frames, sampler, steps,
                               guidance], [strip, download, info], concurrency_id="model")


def _edit_tab(session: Session) -> None:
    """A photo (conditional models): its face found and aligned, then either edited (switch
    attributes, see before | after and the whole photo) or read by the model's attribute
    classifier to generate faces like it."""
    defaults, lim, names = session.edit_model.settings(), session.limits, _names(session)
    with gr.Tab("Edit a photo"):
        if not names:
            gr.Markdown("This model is unconditional: editing needs a model trained "
                        "with attributes.")
            return
        # Lay out the widgets.
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                # image_mode=None: the handler gets the uploaded file itself (not a re-encoded
                # copy), so its size is the upload's and Gradio does not decode it first
                photo = gr.Image(label=f"Photo of a face (at most "
                                       f"{lim.max_upload_mb:g} MB)", type="filepath",
                                 image_mode=None, sources=["upload", "clipboard"],
                                 elem_id="photo")
                align = gr.Checkbox(True, label="Find and align the face (else: the centre "
                                                "of the photo)", elem_id="align")
                with gr.Row():
                    go = gr.Button("Edit", variant="primary", elem_id="edit")
                    like = gr.Button("Faces like this photo", elem_id="like")
                with gr.Accordion("Change (keep / on / off)", open=len(names) <= 12):
                    changes = _attribute_controls(session, KEEP)
                method = gr.Radio(["ddim", "sdedit"], value="ddim",
                                  label="Method (ddim: inversion, keeps identity; "
                                        "sdedit: re-noise to a strength)")
                strength = gr.Slider(0.1, 1.0, value=0.6, step=0.05, label="SDEdit strength")
                steps = gr.Number(EDIT_STEPS, label=f"Steps (1-{lim.max_steps})", precision=0)
                guidance = gr.Slider(0, 10, value=defaults.guidance, step=0.5,
                                     label="Guidance")
            with gr.Column(scale=2):
                edited = gr.Image(label="Before | after (the aligned face), or faces like it",
                                  type="pil", format="png", interactive=False,
                                  elem_id="edit-output")
                info = gr.Markdown(elem_id="edit-info")
                whole = gr.Image(label="The photo, edited", type="filepath", format="png",
                                 interactive=False, elem_id="edit-whole")
                download = gr.File(label="Download (PNG)")

        # Wire them.
        @_errors_shown
        def run_edit(request: gr.Request, photo_: str | None, align_: bool, method_: str,
                     strength_: float, steps_: float, guidance_: float,
                     *values: str) -> tuple[Any, str, str, str]:
            out = session.edit(photo_, dict(zip(names, values, strict=True)), method=method_,
                               steps=steps_, guidance=guidance_, strength=strength_,
                               align=align_, user=request.session_hash)
            return out.display, str(out.path), out.info, str(out.path)

        go.click(run_edit, [photo, align, method, strength, steps, guidance, *changes],
                 [edited, download, info, whole], concurrency_id="model")

        like_defaults = session.model.settings()

        @_errors_shown
        def run_like(request: gr.Request, photo_: str | None, align_: bool) -> Iterator[Any]:
            for item in session.like(photo_, min(8, lim.max_images), like_defaults.sampler,
                                     like_defaults.steps, align=align_,
                                     user=request.session_hash):
                if isinstance(item, Preview):
                    yield item.display, None, item.info, None
                else:
                    yield item.display, str(item.path), item.info, None

        like.click(run_like, [photo, align], [edited, download, info, whole],
                   concurrency_id="model")


def launch(session: Session, *, host: str = "127.0.0.1", port: int | None = None,
           share: bool = False, queue_size: int = 16, block: bool = True) -> gr.Blocks:
    """Serve the page. Requests run one at a time on the model (a queue, not a crash); an
    upload over ``session.limits.max_upload_mb`` is refused by the server.

    With ``block`` it serves until interrupted, then shuts down (``shutdown``); without, the
    caller calls ``shutdown``, and the session's folder is removed at exit in any case."""
    app = build_app(session)
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    atexit.register(session.close)
    try:
        app.launch(server_name=host, server_port=port, share=share, theme=THEME, css=CSS,
                   ssr_mode=False, allowed_paths=[str(session.out_dir)], show_error=True,
                   max_file_size=session.limits.max_upload_bytes,
                   prevent_thread_lock=not block, quiet=False)
    finally:
        if block:  # interrupted (Gradio's own wait returns), or the launch failed
            shutdown(app, session)
    return app


def shutdown(app: gr.Blocks, session: Session) -> None:
    """Stop serving, let Gradio delete its cache, and remove every grid the session wrote."""
    try:
        app.close(verbose=False)  # ends open pages' streams; Gradio then empties its cache
    finally:
        session.close()
        atexit.unregister(session.close)
