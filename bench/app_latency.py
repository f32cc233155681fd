"""How long a user of the web app waits for a grid (run by hand): the app's own generate
request (``facediff.app.logic.Session.generate``: sampling with live previews, the grid
and its PNG), timed from the request to the finished grid, the page's defaults otherwise.

    python bench/app_latency.py                                  # the app's default model
    python bench/app_latency.py celeba-attrs-32 celeba-attrs-32-fast --n 16 --repeat 5

Each model is loaded once, warmed up with one request, then timed over ``--repeat``
requests with seeds 0, 1, ...; prints the median and the range in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from facediff.api import load
from facediff.app.logic import Limits, Output, Session
from facediff.assets import fast_default


def wait(session: Session, n: int, seed: int, attrs: dict[str, str]) -> float:
    d = session.model.settings()
    t0 = time.perf_counter()
    out = None
    for item in session.generate(n, d.sampler, d.steps, seed, choices=attrs):
        out = item
    assert isinstance(out, Output)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="default: the app's default model")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--attr", action="append", default=[], metavar="NAME=on|off")
    args = ap.parse_args()
    attrs = dict(a.split("=", 1) for a in args.attr)
    print("| model | sampler, steps | seconds for a grid of "
          f"{args.n} (median) | range |\n|---|---|---|---|")
    for name in args.models or [str(fast_default(conditional=True))]:
        model = load(name, conditional=True)
        with tempfile.TemporaryDirectory() as tmp:
            session = Session(model, Limits(), out_dir=Path(tmp))
            wait(session, args.n, 999, attrs)  # warm-up
            times = [wait(session, args.n, seed, attrs) for seed in range(args.repeat)]
        d = model.settings()
        print(f"| {model.source} | {d.sampler}, {d.steps} | {statistics.median(times):.2f} | "
              f"{min(times):.2f}-{max(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
