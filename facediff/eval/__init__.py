"""Evaluation: attribute classifier (and, with the evaluation issue, FID/KID/PR)."""
