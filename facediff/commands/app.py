"""``facediff app``: serve the web page (Gradio) to generate, interpolate and edit faces."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands
from facediff.errors import FacediffError

NAME = "app"
log = logging.getLogger("facediff")


def add_parser(commands: Commands) -> None:
    a = commands.add(NAME, "serve a web page to generate, interpolate and edit faces (Gradio)")
    a.add_argument("model", nargs="?", help="model dir, run dir or bundled model name "
                                            "(default: the bundled attribute model's 4-step "
                                            "distilled companion, celeba-attrs-32-fast; "
                                            "photos are edited by its teacher)")
    shared.add_device(a)
    a.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: reachable from other machines)")
    a.add_argument("--port", type=shared.positive("--port"), default=7860)
    a.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    a.add_argument("--max-images", type=shared.positive("--max-images"), default=36,
                   help="most images per request")
    a.add_argument("--max-steps", type=shared.positive("--max-steps"), default=250,
                   help="most sampling steps per request")
    a.add_argument("--max-batch", type=shared.positive("--max-batch"), default=16,
                   help="most images per network batch: a larger request is sampled in "
                        "batches, so memory does not grow with --max-images")
    a.add_argument("--max-upload-mb", type=shared.positive("--max-upload-mb", float),
                   default=20.0,
                   help="largest photo the edit tab accepts, in MB (a phone's JPEG is 2-10 MB; "
                        "the model uses it at 32-64 px)")
    a.add_argument("--queue-size", type=shared.positive("--queue-size"), default=16,
                   help="requests waiting beyond this are turned away with a message")


def run(args: argparse.Namespace) -> int:
    from facediff.device import resolve_device

    device = resolve_device(args.device)
    try:
        from facediff.app.ui import launch
    except ImportError as e:
        if not (e.name or "").startswith("gradio"):
            raise
        raise FacediffError(f"the web app needs gradio ({e.name} is missing): "
                            "pip install 'facediff[app]'") from None
    from facediff.api import load, load_editor
    from facediff.app.logic import Limits, Session
    from facediff.assets import fast_default

    path = args.model if args.model is not None else fast_default(conditional=True)
    model = load(path, device=device, conditional=True, precision=args.precision)
    editor = load_editor(model)
    session = Session(model, Limits(max_images=args.max_images, max_steps=args.max_steps,
                                    max_batch=args.max_batch,
                                    max_upload_mb=args.max_upload_mb),
                      editor=None if editor is model else editor)
    log.info("serving %s on http://%s:%d (Ctrl+C to stop)", session.summary(), args.host,
             args.port)
    if session.editor is not None:
        log.info("photos are edited by %s (the distilled model's teacher: editing inverts a "
                 "photo over many steps)", session.editor.source)
    log.info("grids for download are written to %s (removed at shutdown)", session.out_dir)
    # SIGTERM (a service manager, `kill`) stops the app the way Ctrl+C does, so that its
    # temporary files are removed on that path too
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    launch(session, host=args.host, port=args.port, share=args.share,
           queue_size=args.queue_size)
    return 0
