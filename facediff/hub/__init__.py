"""The Hugging Face ecosystem: facediff models as diffusers pipeline folders, model cards and
the Hub."""

from facediff.hub.card import model_card
from facediff.hub.pipelines import export_pipeline, is_pipeline
from facediff.hub.push import stage, upload

__all__ = ["export_pipeline", "is_pipeline", "model_card", "stage", "upload"]
