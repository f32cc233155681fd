"""Bundled pretrained models: each is an exported model dir (config.yaml, weights.safetensors
in float16) with its MODEL_CARD.md, shipped inside the package so that faces need no download.

Anywhere a model path is taken (``facediff.load``, the CLI), a bundled model's name works too,
and so does a Hugging Face Hub id (``owner/name``, facediff.hub.download); a path that exists
on disk always wins over a name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from facediff.errors import ModelNotFoundError

ASSETS = Path(__file__).resolve().parent
CARD = "MODEL_CARD.md"


@dataclass(frozen=True)
class Bundled:
    name: str
    summary: str

    @property
    def path(self) -> Path:
        return ASSETS / self.name

    @property
    def card(self) -> Path:
        return self.path / CARD


# the default: 64 px faces (issue 21's first release model; the 32 px one stays for its 4-step
# companion, which the app serves, and as that companion's teacher)
UNCONDITIONAL = Bundled("celebahq-64", "unconditional faces, 64x64, trained on CelebA-HQ 128 px "
                                       "less 2,000 held-out faces")
UNCONDITIONAL_32 = Bundled("celebahq-32", "unconditional faces, 32x32, trained on CelebA-HQ 64 px")
CONDITIONAL = Bundled("celeba-attrs-32", "faces with 8 CelebA attributes under control "
                                         "(Male, Smiling, Eyeglasses, ...), 32x32")
# few-step students of the two (facediff distill: 4 DDIM steps); the app serves them
UNCONDITIONAL_FAST = Bundled("celebahq-32-fast", "celebahq-32 distilled to 4 DDIM steps "
                                                 "(unconditional faces, 32x32)")
CONDITIONAL_FAST = Bundled("celeba-attrs-32-fast", "celeba-attrs-32 distilled to 4 DDIM steps, "
                                                   "guidance inside (8 attributes, 32x32)")
# the other release models of issue 21 (docs/training-plan.md): one per seed project's job
ANIME = Bundled("anime-64", "anime faces, 64x64, trained on the Kaggle anime-face set less "
                            "1,500 held-out faces")
# 128 px, latent (on facediff's own 128 px autoencoder, inside the same weights file); not
# the default: at 64 px it scores worse than celebahq-64 (its card)
UNCONDITIONAL_128 = Bundled("celebahq-128", "unconditional faces, 128x128 (latent), trained "
                                            "on CelebA-HQ 128 px less 2,000 held-out faces")
ATTRS_64 = Bundled("celeba-attrs-64", "faces with the 8 CelebA attributes of celeba-attrs-32 "
                                      "under control, 64x64, trained on CelebA's train split")
UTKFACE = Bundled("utkface-128", "faces with age, gender and race under control, 128x128 "
                                 "(latent), trained on UTKFace less a seeded 10%")
# the release models: trained for hours at 64 and 128 px, each with a card and its grid.png
# (16 faces, seeds 0-15), at most 25 MB each and 60 MB together
RELEASE: tuple[Bundled, ...] = (UNCONDITIONAL, UNCONDITIONAL_128, ATTRS_64, UTKFACE, ANIME)
GRID = "grid.png"
BUNDLED: dict[str, Bundled] = {b.name: b for b in (UNCONDITIONAL, CONDITIONAL, *RELEASE,
                                                   UNCONDITIONAL_32, UNCONDITIONAL_FAST,
                                                   CONDITIONAL_FAST)}
# the CLI's help for a model argument that defaults to the bundled models
MODEL_HELP = ("model dir, run dir or bundled model name (default: the bundled face model; with "
              "--attr, the bundled attribute model)")


def resolve_model(path: str | Path | None, conditional: bool = False) -> Path:
    """A model path, a bundled model's name, or None for the default bundled model.

    ``conditional`` picks the default when ``path`` is None: the attribute model, else the
    unconditional one.
    """
    if path is None:
        return (CONDITIONAL if conditional else UNCONDITIONAL).path
    p = Path(path).expanduser()
    if p.exists():
        return p
    if str(path) in BUNDLED:
        return BUNDLED[str(path)].path
    from facediff.hub.download import hub_model, looks_like_repo_id

    if looks_like_repo_id(str(path)):  # a Hugging Face Hub repo: downloaded into its cache
        return hub_model(str(path))
    raise ModelNotFoundError(f"model not found: {p} (bundled models: {', '.join(BUNDLED)}; "
                             "or a Hugging Face Hub id, owner/name)")


def fast_default(conditional: bool = False) -> Path:
    """The default model where speed matters (the web app): a 4-step companion (of the
    bundled attribute model; unconditional: of ``celebahq-32``, the only unconditional model
    distilled so far)."""
    return (CONDITIONAL_FAST if conditional else UNCONDITIONAL_FAST).path


def describe(b: Bundled) -> str:
    """A few lines about a bundled model: size, conditions, parameters, sampler, card."""
    from safetensors import safe_open

    from facediff.config import Config

    cfg = Config.load(b.path / "config.yaml")
    weights = b.path / "weights.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    conds = ", ".join(c.name for c in cfg.conditions) or "none (unconditional)"
    px = cfg.data.image_size
    return (f"{b.name}: {b.summary}\n"
            f"  {px}x{px}, {params / 1e6:.2f} M parameters, "
            f"{weights.stat().st_size / 2**20:.1f} MiB; conditions: {conds}\n"
            f"  default sampler: {cfg.sample.sampler}, {cfg.sample.steps} steps; card: {b.card}")
