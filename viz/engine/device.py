"""Device choice and CPU thread setup."""

from __future__ import annotations

import os

import torch

from ..base.errors import VizError

_threads_set = False


def setup_threads() -> int:
    """Use every core this process may run on (unless the user set OMP_NUM_THREADS); return the count."""
    global _threads_set
    if not _threads_set and "OMP_NUM_THREADS" not in os.environ:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores))
    _threads_set = True
    return torch.get_num_threads()


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit name must be available here."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        setup_threads()
        return torch.device("cpu")
    if name == "cpu":
        setup_threads()
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VizError("device 'cuda' is not available on this machine: use --device cpu or auto")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise VizError("device 'mps' is not available on this machine: use --device cpu or auto")
        return torch.device("mps")
    raise VizError(f"unknown device {name[:20]!r}: choose auto, cpu, cuda or mps")


_bf16_fast: dict[str, bool] = {}


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast is worth it here: native bf16 on the GPU, or oneDNN bf16 kernels on the CPU
    (AVX-512 BF16 / AMX). Without them, CPUs emulate bf16 convolutions 30-70x slower than fp32 (measured on
    an AVX2-only EPYC, see docs/BENCHMARKS.md)."""
    key = str(device)
    if key not in _bf16_fast:
        if device.type == "cuda":
            _bf16_fast[key] = torch.cuda.is_bf16_supported()
        elif device.type == "cpu":
            probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
            try:
                _bf16_fast[key] = bool(probe()) if probe is not None else False
            except RuntimeError:
                _bf16_fast[key] = False
        else:
            _bf16_fast[key] = False
    return _bf16_fast[key]
