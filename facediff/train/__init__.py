"""Training: the loop (trainer.py), its EMA (ema.py) and every file it writes (checkpoint.py)."""
