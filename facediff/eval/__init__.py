"""Evaluation: Inception features, FID/KID/precision-recall, reference caches, the attribute
classifier, sweeps and their tables and plots."""
