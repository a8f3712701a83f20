"""This process's memory as Linux reports it: the peak follows what was touched, and a reset brings it back."""

import mmap
import sys

import pytest

from viz.base.memory import peak_bytes, reset_peak, resident_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")


def test_the_peak_is_reset_to_what_is_resident_and_then_follows_what_is_touched():
    before = reset_peak()
    assert abs(before - resident_bytes()) < 8 << 20
    assert peak_bytes() - before < 8 << 20  # just reset: nothing has run since
    # 64 MiB mapped apart from malloc's heap (which may keep what it frees), every page written
    block = mmap.mmap(-1, 64 << 20)
    for _ in range(64):
        block.write(b"\1" * (1 << 20))
    assert peak_bytes() - before > 56 << 20
    block.close()
    assert peak_bytes() - resident_bytes() > 56 << 20  # given back, but the peak remembers it
    assert peak_bytes(999_999_999) is None  # no such process: no number
