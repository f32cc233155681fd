"""Errors that a user can cause and fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class FacediffError(Exception):
    """Bad input from the user (a path, a config key, a number out of range)."""

    exit_code = 2


class ConfigError(FacediffError):
    """An unknown preset, key or value in a configuration."""


class DataError(FacediffError):
    """A dataset that cannot be read."""


class ModelNotFoundError(FacediffError):
    """A model path that holds neither an exported model nor a run with checkpoints."""
