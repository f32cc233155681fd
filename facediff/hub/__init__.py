"""The Hugging Face ecosystem: facediff models as diffusers pipeline folders."""

from facediff.hub.pipelines import export_pipeline, is_pipeline

__all__ = ["export_pipeline", "is_pipeline"]
