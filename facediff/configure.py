"""The config a command runs with: built from a preset, a file or a run's saved config, with
``--set`` overrides, and checked in full.

facediff.config holds the config as plain data and checks what it can alone; the sampler's
check against the schedule (diffusers samples the sigmoid schedule with ``ddpm`` only) lives
with the sampling code. This module puts the two together, so a config that cannot be
sampled is an error before training starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from facediff.config import Config, build_config
from facediff.diffusion.sampling import check_sampling


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Config | None = None,
) -> Config:
    """Base (or preset, or config file, or defaults), then overrides, then every check."""
    cfg = build_config(preset, config_file, overrides, base)
    check_sampling(cfg.sample, cfg.diffusion)
    return cfg
