"""Training: the loop (trainer.py), its EMA (ema.py) and every file it writes (checkpoint.py).

``facediff.train(cfg, run_dir, ...)`` is the Python API's training call
(facediff.train.trainer.train). Importing any module of this package binds the name
``facediff.train`` to the package itself, which would shadow that function once anything had
loaded a model (``facediff.load`` reads checkpoints through it); so the package is callable
and calls it.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from facediff.train.trainer import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
