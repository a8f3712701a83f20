"""A dependency-free progress bar with rate and ETA, for the CLI (stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """``desc  45% |#####     | 230/512 [00:12<00:14, 18.9 it/s] extra``.

    On a terminal it redraws one line; elsewhere (logs, CI) it prints a line at most every 10 %.
    """

    def __init__(self, total: int, desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 width: int = 24, initial: int = 0, start: float | None = None):
        self.total, self.desc, self.unit, self.width = max(total, 1), desc, unit, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter() if start is None else start
        self.initial = self.n = initial
        self._last_decile = -1

    def eta(self) -> float:
        done = self.n - self.initial
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.start) / done * (self.total - self.n)

    def line(self, extra: str = "") -> str:
        frac = min(self.n / self.total, 1.0)
        filled = int(frac * self.width)
        elapsed = time.perf_counter() - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = self.eta()
        eta_s = fmt_time(eta) if eta == eta else "--:--"
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"{self.desc} {frac:4.0%} |{bar}| {self.n}/{self.total} [{fmt_time(elapsed)}<{eta_s}, {rate:.2f} {self.unit}/s]"
        return f"{text} {extra}".rstrip()

    def update(self, n: int | None = None, extra: str = "") -> None:
        self.n = self.n + 1 if n is None else n
        if self.tty:
            self.stream.write("\r" + self.line(extra) + "\x1b[K")
            self.stream.flush()
        else:
            decile = int(10 * self.n / self.total)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self.line(extra) + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
