"""A process's resident memory, as Linux's ``/proc/<pid>/status`` reports it: its peak (VmHWM), what is resident
now (VmRSS), and a reset of this process's peak to what is resident now (``/proc/self/clear_refs``).

The memory checks (the benchmark's, the hosting probes', the load test's) read these rather than getrusage's
``ru_maxrss``: Linux carries ru_maxrss over an exec, so a child of a large process reports its parent's peak."""

from __future__ import annotations

from pathlib import Path


def _status_bytes(field: str, pid: int | str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # not Linux, or the process is gone
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def peak_bytes(pid: int | str = "self") -> int | None:
    """The process's peak resident memory so far (since it started or since :func:`reset_peak`); None off Linux."""
    return _status_bytes("VmHWM", pid)


def resident_bytes(pid: int | str = "self") -> int | None:
    """What the process holds in memory now; None off Linux."""
    return _status_bytes("VmRSS", pid)


def reset_peak() -> int | None:
    """This process's peak back to what is resident now, so that a later :func:`peak_bytes` is the peak of what
    runs in between; returns what is resident now."""
    Path("/proc/self/clear_refs").write_text("5")
    return resident_bytes()
