"""``python -m viz bench``: speed and quality, measured as ratios within one run, written to docs/.

Outputs ``BENCHMARKS.md``, ``bench.json`` and PNGs. ``--quick`` is a smoke run (tiny sizes, few layers) for CI;
the full run is what docs/BENCHMARKS.md reports.

The run is a sequence of sections (:data:`SECTIONS`, in :mod:`viz.bench.sections`), each a function
``(Bench) -> dict`` filling one key of the results; the report (:mod:`viz.bench.report`) is built from those numbers
only (every claim and every target's verdict is computed, see :data:`viz.bench.config.TARGETS`). The peer section
renders the same channels with Lucent (:mod:`viz.bench.peers`) when torch-lucent is installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..engine.device import resolve_device
from ..engine.model import load_model
from .config import Bench, BenchConfig
from .report import write_report
from .sections import (
    baseline_section,
    circuits_section,
    examples_section,
    factors_section,
    machine_section,
    overhead_section,
    peer_section,
    quality_section,
    speed_section,
    variants_section,
    wall_time,
)


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmark speed and quality; writes docs/BENCHMARKS.md")
    b.add_argument("--quick", action="store_true", help="a fast smoke run (tiny sizes, three layers)")
    b.add_argument("--out", default="docs", help="output folder (default docs/)")
    b.add_argument("--weights", default="oxford")
    b.add_argument("--device", default="auto")


SECTIONS: dict[str, Callable[[Bench], object]] = {
    "speed": speed_section, "baseline": baseline_section, "overhead": overhead_section,
    "examples": examples_section, "factors": factors_section, "variants": variants_section,
    "quality": quality_section, "peer": peer_section, "circuits": circuits_section,
}


def run_bench(quick: bool, out: Path, weights: str = "oxford", device: str = "auto", log=print,
              sections: tuple[str, ...] | None = None, config: BenchConfig | None = None) -> dict:
    """Run ``sections`` (default: all of :data:`SECTIONS`, in order), write ``bench.json`` and the report to
    ``out``, return the results. ``config`` overrides the sizes of ``quick`` / full."""
    dev = resolve_device(device)
    cfg = config or (BenchConfig.quick_run() if quick else BenchConfig.full_run())
    b = Bench(cfg, weights, dev, load_model(weights, dev, channels_last=dev.type == "cpu"), log)
    b.res.update({"quick": cfg.quick, "weights": weights, "machine": machine_section(b)})
    spent = b.res["section_seconds"] = {}
    for name in sections or tuple(SECTIONS):
        b.res[name], spent[name] = wall_time(lambda: SECTIONS[name](b))
        log(f"[{name}: {spent[name]:.0f} s]")
    res = b.res
    pictures = res.pop("_images", {})
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=float))
    write_report(res, out, pictures)
    return res
