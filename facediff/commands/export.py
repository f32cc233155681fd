"""``facediff export``: write a run's EMA weights as a model dir, or as a diffusers pipeline
folder (``--format diffusers``)."""

from __future__ import annotations

import argparse

from facediff.commands import arguments as shared
from facediff.commands.arguments import Commands

NAME = "export"


def add_parser(commands: Commands) -> None:
    e = commands.add(NAME, "export a run's EMA weights as a model dir")
    e.add_argument("run", help="run dir")
    e.add_argument("--out", required=True, help="output model dir")
    e.add_argument("--half", action="store_true", help="store weights in float16")
    e.add_argument("--format", choices=("facediff", "diffusers"), default="facediff",
                   help="facediff (default): config.yaml + weights.safetensors; diffusers: a "
                        "pipeline folder DiffusionPipeline.from_pretrained loads (DDPMPipeline "
                        "for unconditional pixel models; conditional and latent models ship "
                        "their pipeline file: trust_remote_code=True)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from facediff.api import load

    shared.writable_dir(Path(args.out).expanduser().parent, "the folder of --out")
    model = load(args.run, device="cpu", precision="fp32")
    if args.format == "diffusers":
        from facediff.hub import export_pipeline

        out = export_pipeline(model, args.out, half=args.half)
        s = model.settings()
        custom = len(model.spec) > 0 or getattr(model.net, "latent", False)
        load = f"{str(out)!r}, trust_remote_code=True" if custom else repr(str(out))
        attrs = ""
        if len(model.spec):
            first = model.spec.conditions[0]
            attrs = (f", attributes={{{first.name!r}: {first.values[-1]!r}}}, "
                     f"guidance_scale={model.config.sample.guidance:g}")
        print(f"exported {model.source} to {out} (a diffusers pipeline: "
              f"DiffusionPipeline.from_pretrained({load})(16, num_inference_steps={s.steps}"
              f"{attrs}); its scheduler is facediff's {s.sampler})")
        return 0
    out = model.save(args.out, half=args.half)
    print(f"exported {model.source} to {out}")
    return 0
