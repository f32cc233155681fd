"""The web app (``facediff app MODEL``): generate, interpolate and edit faces in a browser."""

from facediff.app.logic import Limits, Output, Preview, Session

__all__ = ["Limits", "Output", "Preview", "Session"]
