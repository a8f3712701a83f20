"""The server gives the memory a finished job freed back to the system (viz/serving/heap.py)."""

import sys

import numpy as np
import pytest

from viz.base.memory import resident_bytes
from viz.serving.heap import give_back

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, Linux's RSS")]


def test_freed_heap_memory_goes_back_to_the_system():
    """As after a render: a freed 16 MiB block raises glibc's mmap threshold, so the 2 MiB blocks after it come from
    the heap, and once they are freed with a live block above them, the process keeps their pages until trimmed."""
    big = np.ones(16 << 17)
    del big
    blocks = [np.ones(2 << 17) for _ in range(128)]  # 256 MiB
    pin = np.ones(2 << 17)  # above them: the heap cannot shrink from its end
    del blocks
    before = resident_bytes()
    assert give_back()
    assert before - resident_bytes() > 128 << 20, "malloc_trim returned less than half of the 256 MiB freed"
    del pin
