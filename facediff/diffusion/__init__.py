"""Diffusion maths: the training objective and the samplers."""
