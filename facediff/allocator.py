"""glibc's allocator, tuned for torch on CPUs: keep freed tensor memory for reuse.

By default glibc gives each allocation above a (dynamic) threshold its own ``mmap`` and
returns it to the kernel on free, and trims the heap's top back as soon as 128 KiB are free.
A CPU training step frees and reallocates the same few-MiB activations every step, so each
step pays again for faulting in and zeroing fresh pages: about 60,000-80,000 page faults a
second and 10-75% of the time in the kernel (a 64 px U-Net training on a 2-core AMD EPYC,
fp32). Serving allocations up to 32 MiB from the heap and trimming it only above 2 GiB free
made the same training step 21-39% faster and sampling 16-20% faster (bench/allocator.py;
docs/performance.md). It is what Intel's and PyTorch's CPU guides reach by preloading
jemalloc or tcmalloc, done with glibc's own ``mallopt``, so nothing has to be installed. The
price is memory: the process keeps its peak heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h) and the values set
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {
    M_MMAP_THRESHOLD: 32 << 20,  # glibc's largest allowed value on 64-bit systems
    M_TRIM_THRESHOLD: 2**31 - 1,  # the largest int: keep up to 2 GiB free at the heap's top
    M_TOP_PAD: 1 << 30,  # grow the heap in large steps (address space, not memory)
}
_done: bool | None = None


def tune_allocator() -> bool:
    """Apply ``SETTINGS`` to this process's glibc allocator (once); whether they are in
    force. Nothing is changed where the user already chose: a ``MALLOC_*`` variable set, or
    another allocator preloaded (``LD_PRELOAD``); nor off Linux/glibc, or with
    ``FACEDIFF_TUNE_MALLOC=0``."""
    global _done
    if _done is not None:
        return _done
    _done = False
    env = os.environ
    if (sys.platform != "linux" or env.get("FACEDIFF_TUNE_MALLOC") == "0"
            or any(k.startswith("MALLOC_") for k in env) or env.get("LD_PRELOAD")):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _done
