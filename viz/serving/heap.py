"""Freed memory goes back to the system after each job, so a server's peak is its current jobs', not its history's.

glibc's malloc keeps most freed heap memory in the process, and after the first large render it serves more of
every later render from the heap: each time a block over its mmap threshold (128 KiB at start) is freed, it raises
the threshold to that block's size, up to 32 MiB. Measured through the job manager at the size cap (conv5_3, one
slot, 2.5 GB ceiling), one request after another in one process: the resident memory between jobs grew from 0.80
GB to 1.29-1.44 GB after the first render, and the later jobs peaked 0.15-0.2 GB higher than in a fresh process
(seed at 880 px, its cap then: 2.52 GB; Compare's seed pair: 2.53 GB, over the ceiling). Trimming the heap after
each job brings the memory between jobs back to 0.97 GB and each job's peak to a fresh process's (2.24-2.38 GB).

Fixing the threshold (``mallopt``) bounds the peaks more (1 MiB: 2.04-2.21 GB) but costs speed: every large
tensor then gets fresh pages, and a conv4_3 render at 224 px took 20 % longer (4 MiB: 14 %, 16 MiB: 6 %, with
peaks up to 2.41 GB), so the server trims instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def give_back() -> bool:
    """Return the free memory of every malloc arena of this process to the system (glibc's ``malloc_trim``): a
    few milliseconds. True where it ran; False on other systems or another C library (musl has no
    ``malloc_trim``)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True
