"""The benchmark's sections: timing helpers, the judge, and one function ``(Bench) -> dict`` per section."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from ..atlas import circuits, contributions, wiring
from ..atlas.examples import reference, scan_throughput
from ..atlas.factors import DEFAULT_K, photo_factors
from ..atlas.metrics import (
    activation_ratio,
    diversity,
    hf_fraction,
    natural_crops,
    naturalness,
    robustness,
    summarize,
)
from ..base.corpus import bundled, load_photo
from ..base.files import PROJECT_ROOT
from ..base.images import thumbnail
from ..engine.device import bf16_is_fast
from ..engine.layers import LAYER_NAMES, LAYERS, get_layer
from ..engine.methods import METHODS, Method
from ..engine.model import VGGFeatures, load_model
from ..engine.optimize import autocast_context
from ..engine.param import maco_image, make_generators
from ..engine.render import channel_activation, render
from ..engine.settings import default_precision
from ..engine.transforms import BatchRNG, lucid_transforms
from .config import PEER_METHODS, TARGET_LAYER, Bench, sample_channels
from .peers import LUCENT_VERSION, lucent_render, lucent_unusable


# -------------------------------------------------------------------------------------------------- timing
def _time(fn, repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls: on a shared machine, noise only ever adds time. On a GPU each call
    is waited for (kernels are launched asynchronously)."""
    def sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def wall_time(fn):
    """(fn(), its wall seconds)."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def peak_gflops(device: torch.device, n: int = 1536) -> float:
    """The best fp32 throughput measured here: a matmul of sides ``n`` and ``2n``, and a 3x3 conv of 512
    channels (the kind VGG16 is made of, in the layout the renders use), whichever is fastest. One matmul size
    alone is no peak: the renders' own convs ran at up to twice a 1536-side matmul on an AVX-512 machine."""
    best = 0.0
    for side in (n, 2 * n):
        a, b = torch.randn(side, side, device=device), torch.randn(side, side, device=device)
        best = max(best, 2 * side**3 / _time(lambda: torch.mm(a, b), repeats=3) / 1e9)
    hw = max(4, n // 64)
    conv = torch.nn.Conv2d(512, 512, 3, padding=1).to(device).eval()
    x = torch.randn(8, 512, hw, hw, device=device)
    if device.type == "cpu":
        conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        sec = _time(lambda: conv(x), repeats=3)
    return max(best, 2 * 9 * 512 * 512 * hw * hw * 8 / sec / 1e9)


def full_scale(recipe: Method) -> Method:
    """The recipe without its coarse-to-fine octaves: every step at full size (per-step hardware speed)."""
    return replace(recipe, octaves=())


def straightforward(recipe: Method) -> Method:
    """The recipe as a straightforward port would run it: full size every step, Lucid's padded transforms."""
    return replace(recipe, octaves=(), make_transforms=lucid_transforms)


def render_step_seconds(settings, channels: list[int], device: torch.device, recipe: Method | None = None) -> float:
    """Marginal seconds per optimization step of ``render`` (steps N and 2N, differenced): the per-render
    set-up and final evaluation cancel out."""
    n = settings.steps
    shorts, longs = [], []
    for _ in range(2):
        shorts.append(render(settings, channels, device, recipe=recipe).seconds)
        longs.append(render(replace(settings, steps=2 * n), channels, device, recipe=recipe).seconds)
    # fastest of each, then the difference (the fastest difference would pick noise, not the machine)
    return max(min(longs) - min(shorts), 1e-9) / n


def forward_flops(layer: str, size: int, last_channels: int | None = None) -> float:
    """Multiply-adds x 2 of the cut network up to ``layer`` for one image of ``size`` px (convs only); with
    ``last_channels``, the target conv computes only that many output channels (as a render does)."""
    flops, side, block = 0.0, size, 1
    for lay in LAYERS.values():
        if lay.block != block:
            side //= 2
            block = lay.block
        out = lay.channels if lay.name != layer or last_channels is None else min(last_channels, lay.channels)
        flops += 2 * lay.in_channels * 9 * out * side * side
        if lay.name == layer:
            break
    return flops


def bare_step(cut, x: torch.Tensor, channels_last: bool, precision: str, device: torch.device):
    def step():
        xi = x.detach().clone().requires_grad_(True)
        xin = xi.contiguous(memory_format=torch.channels_last) if channels_last else xi
        with autocast_context(device, precision):
            y = cut(xin)
        y.float().mean().backward()
    return step


def render_channel_seconds(settings, channels: list[int], device: torch.device, recipe: Method | None = None,
                           repeats: int = 2) -> float:
    """Wall seconds per channel of a whole batched render (fastest of ``repeats``)."""
    return min(render(settings, channels, device, recipe=recipe).seconds for _ in range(repeats)) / len(channels)


def baseline_step_seconds(weights, layer: str, channel: int, size: int, steps: int) -> float:
    """The straightforward implementation: full torchvision VGG16 (classifier included) every step, one channel,
    fp32, default memory format, a hook on the target conv, the Fourier image at full size every step with
    Lucid's padded transforms."""
    import torchvision


    net = torchvision.models.vgg16(weights=None)
    net.features.load_state_dict({k.removeprefix("features."): v for k, v in weights.state_dict.items()})
    net.eval().requires_grad_(False)
    norm = load_model(weights.name, "cpu").normalize
    grabbed = {}
    net.features[get_layer(layer).index].register_forward_hook(lambda m, i, o: grabbed.__setitem__("a", o))
    gens = make_generators(0, [channel])
    recipe = straightforward(METHODS["fourier"])
    param, tf, rng = recipe.make_param(gens, size), recipe.make_transforms(), BatchRNG(gens)
    opt = torch.optim.Adam(param.parameters(), lr=0.05)

    def step():
        opt.zero_grad()
        net(norm(tf(param(), rng)))
        (-grabbed["a"][0, channel].mean()).backward()
        opt.step()

    return _time(step, repeats=steps)


# ------------------------------------------------------------------------------------------------- the judge
def judge(model: VGGFeatures, layer: str, images: np.ndarray, channels: list[int], reference: np.ndarray) -> list[dict]:
    """The same measures for any method's images (B, H, W, 3) uint8, one dict per image: pre-ReLU channel mean
    of the 8-bit image, that over the channel's best photo response (``reference``; None where it is not
    positive), robustness under the standard and the wide transform families, high-frequency share and the
    naturalness measures (clipped share, colourfulness, colour distance to the bundled photos)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    act = channel_activation(model, layer, x, channels)
    ratio = activation_ratio(act, np.asarray(reference, dtype=np.float64)[channels])
    rob = robustness(model, layer, images, channels)
    wide = robustness(model, layer, images, channels, family="wide")
    return [{"activation": float(act[i]), "ratio": None if not np.isfinite(ratio[i]) else float(ratio[i]),
             "robustness": float(rob[i]), "robustness_wide": float(wide[i]), "hf": hf_fraction(images[i]),
             **naturalness(images[i])} for i in range(len(channels))]


def _reference(model: VGGFeatures, layer: str, log) -> np.ndarray:
    """Per channel of ``layer``: its strongest response in the bundled photos (the "x best photo" of the app)."""
    return reference(model, layer, notice=log)


# -------------------------------------------------------------------------------------------------- sections
def machine_section(b: Bench) -> dict:
    return {"device": str(b.dev), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "bf16_native": bf16_is_fast(b.dev), "default_precision": default_precision(b.dev)}


def speed_section(b: Bench) -> dict:
    """Machine peak and, per layer, the default render batched with every step at full size (the hardware's side
    of speed: useful GFLOP/s against the peak)."""
    cfg, dev = b.cfg, b.dev
    peak = peak_gflops(dev, cfg.peak_n)
    b.log(f"peak (best of matmul and conv): {peak:.1f} GFLOP/s")
    recipe, chans, per_layer = full_scale(METHODS["fourier"]), list(range(cfg.batch)), []
    for name in cfg.layers:
        s = b.settings(name, size=cfg.size, steps=cfg.steps)
        render(replace(s, steps=1), chans, dev, recipe=recipe)  # warm-up
        sec = render_step_seconds(s, chans, dev, recipe) / cfg.batch
        useful = 2 * forward_flops(name, cfg.size, cfg.batch)  # forward + input-gradient backward, batch's channels
        per_layer.append({"layer": name, "s_per_step_per_channel": sec, "useful_gflops": useful / sec / 1e9,
                          "fraction_of_peak": useful / sec / 1e9 / peak})
        b.log(f"{name}: {sec * 1e3:.1f} ms/step/channel, {useful / sec / 1e9:.1f} GFLOP/s useful")
    return {"peak_gflops": peak, "size": cfg.size, "batch": cfg.batch, "per_layer": per_layer}


def baseline_section(b: Bench) -> dict:
    """Per channel at conv5_1: the straightforward baseline, the same work done our way, and the default recipe."""
    cfg, dev = b.cfg, b.dev
    n = cfg.baseline_steps
    s = b.settings(TARGET_LAYER, size=cfg.size, steps=n)
    chans = list(range(cfg.batch))
    base = baseline_step_seconds(b.model.weights, TARGET_LAYER, 0, cfg.size, min(n, 8)) * n
    same_work = render_channel_seconds(s, chans, dev, straightforward(METHODS["fourier"]))
    default = render_channel_seconds(s, chans, dev)
    b.log(f"default vs baseline at {TARGET_LAYER}, per channel: {base / default:.2f}x "
          f"(implementation {base / same_work:.2f}x, coarse-to-fine recipe {same_work / default:.2f}x)")
    return {"layer": TARGET_LAYER, "steps": n, "size": cfg.size, "baseline_s_per_channel": base,
            "same_work_s_per_channel": same_work, "default_s_per_channel": default,
            "implementation_speedup": base / same_work, "recipe_speedup": same_work / default,
            "speedup": base / default}


def overhead_section(b: Bench) -> dict:
    """The render loop against the bare cut network (forward + backward) at the same batch and size."""
    cfg, dev = b.cfg, b.dev
    chans = list(range(cfg.batch))
    s = b.settings(TARGET_LAYER, size=cfg.size, steps=cfg.steps)
    cut = b.model.cut(get_layer(TARGET_LAYER), channels=chans)  # the same network the render runs
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, device=dev)
    bare = _time(bare_step(cut, x, b.channels_last, s.precision, dev), repeats=cfg.steps)
    loop = render_step_seconds(s, chans, dev, full_scale(METHODS["fourier"]))
    b.log(f"loop overhead: {100 * (loop / bare - 1):.1f} %")
    return {"bare_s_per_step": bare, "loop_s_per_step": loop, "overhead_pct": 100 * (loop / bare - 1)}


def examples_section(b: Bench) -> dict:
    """The dataset-examples scan's throughput against bare forward passes over the same bundled photos."""
    e = scan_throughput(load_model(b.weights, b.dev), bundled(), limit=b.cfg.examples_limit)
    b.log(f"examples scan: {e['scan_images_per_s']:.2f} images/s vs bare forward {e['bare_images_per_s']:.2f} "
          f"({100 * e['ratio']:.0f} %)")
    return e


def circuits_section(b: Bench) -> dict:
    """Circuits on a warm server: every layer's sampled channels, both measures, both directions, one level
    (the contribution table read once first, as the app does), the circuit page's neighbourhood, and what reading
    the photos for the table costs (in a subprocess, against one that only loads the model: peak memory)."""
    model = load_model(b.weights, "cpu")
    start = time.perf_counter()
    table = contributions.contribution_table(model)
    load_s = time.perf_counter() - start
    per_call: dict[str, list[float]] = {"weight": [], "contribution": []}
    worst = {"weight": ("", 0.0), "contribution": ("", 0.0)}
    n = 2 if b.cfg.quick else 4
    for layer in LAYER_NAMES:
        for ch in sample_channels(layer, n):
            for by in circuits.BY:
                for direction in circuits.DIRECTIONS:
                    if direction == "out" and wiring.layer_above(layer) is None:
                        continue
                    t0 = time.perf_counter()
                    circuits.circuit(model, layer, ch, direction, by)
                    ms = 1000 * (time.perf_counter() - t0)
                    per_call[by].append(ms)
                    if ms > worst[by][1]:
                        worst[by] = (f"{layer}:{ch} {direction}", ms)
    page_ms = {}
    for by in circuits.BY:
        t0 = time.perf_counter()
        circuits.neighbourhood(model, "conv5_1", 104, by, below=2, above=1, fan=4)
        page_ms[by] = 1000 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    circuits.circuit(model, "conv5_1", 104, "in", "weight", depth=2)
    expanded_ms = 1000 * (time.perf_counter() - t0)
    build = {} if b.cfg.quick else _table_build_cost(b.weights)
    out = {"calls": sum(map(len, per_call.values())), "table_load_s": load_s, "table_top": table.top,
           "median_ms": {k: float(np.median(v)) for k, v in per_call.items()},
           "max_ms": {k: max(v) for k, v in per_call.items()}, "worst": {k: w[0] for k, w in worst.items()},
           "neighbourhood_ms": page_ms, "expanded_ms": expanded_ms, "build": build}
    b.log(f"circuits: {out['calls']} calls, max {max(out['max_ms'].values()):.1f} ms; page "
          f"{max(page_ms.values()):.0f} ms; table build {build.get('seconds', float('nan')):.0f} s")
    return out


def child_peak(code: str, weights: str | None = None) -> dict:
    """Run ``code`` in a fresh Python process (after loading ``weights``' model, if given): its seconds and its
    own peak resident memory in MB. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over an exec, so
    a child of a large process (the bench itself) would report its parent's peak (a full run measured "+0 MB").
    The probe reads /proc itself rather than through :mod:`viz.base.memory`: importing ``viz`` would load torch
    into the process it measures."""
    load = f"from viz.engine.model import load_model\nm = load_model({weights!r})\n" if weights else ""
    probe = (f"import json, re, time\n{load}t0 = time.perf_counter()\n{code}\n"
             "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())\n"
             "print(json.dumps({'s': time.perf_counter() - t0, 'rss_mb': int(hwm.group(1)) / 1024}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=1800,
                          cwd=PROJECT_ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table_build_cost(weights: str) -> dict:
    """Seconds and peak resident memory of reading the bundled photos for the contribution table, in a fresh
    process, beside a process that only loads the model (the difference is the table's own cost)."""
    base = child_peak("pass", weights)
    built = child_peak("from viz.atlas.contributions import measure_contributions\nmeasure_contributions(m)", weights)
    return {"seconds": built["s"], "peak_rss_mb": built["rss_mb"], "model_only_rss_mb": base["rss_mb"],
            "extra_mb": built["rss_mb"] - base["rss_mb"]}


def factors_section(b: Bench) -> dict:
    """A photo's groups (:func:`viz.atlas.factors.photo_factors`, k=6) at every layer (the quick run: two): the bundled astronaut at 224 px,
    the forward pass and the NMF together, the faster of two runs (the first run of all warms up)."""
    photo = thumbnail(load_photo("astronaut"), 224)
    photo_factors(b.model, photo, LAYER_NAMES[0], DEFAULT_K)
    per_layer = {}
    for layer in b.cfg.factors_layers:
        per_layer[layer] = _time(lambda lay=layer: photo_factors(b.model, photo, lay, DEFAULT_K), repeats=2, warmup=0)
    worst = max(per_layer, key=per_layer.get)
    b.log(f"factors of a 224 px photo: at most {per_layer[worst]:.2f} s ({worst})")
    return {"size": 224, "k": DEFAULT_K, "s_per_layer": per_layer, "worst_layer": worst,
            "worst_s": per_layer[worst]}


def variants_section(b: Bench) -> list[dict]:
    """Batch sizes, precision and memory format (bare network, conv5_1)."""
    cfg, dev = b.cfg, b.dev
    out = []
    for batch in cfg.variant_batches:
        xb = torch.rand(batch, 3, cfg.size, cfg.size, device=dev)
        for prec in ("fp32", "bf16"):
            for fmt in (True, False):
                if prec == "bf16" and batch > 1 and not bf16_is_fast(dev):
                    continue  # emulated bf16 is 30-70x slower: batch 1 shows it, larger batches only cost time
                m = load_model(b.weights, dev, channels_last=fmt)
                sec = _time(bare_step(m.cut(get_layer(TARGET_LAYER)), xb, fmt, prec, dev),
                            repeats=1 if prec == "bf16" else 2)
                out.append({"batch": batch, "precision": prec, "channels_last": fmt, "s_per_image_step": sec / batch})
                b.log(f"batch {batch} {prec} channels_last={fmt}: {sec / batch * 1e3:.1f} ms/image-step")
    return out


def quality_candidates(dev: torch.device) -> dict[str, tuple[str, Method | None, str]]:
    """label -> (method, recipe override, precision) for the quality table."""
    out = {"seed": ("seed", None, "fp32"), "fourier": ("fourier", None, "fp32"),
           "fourier 1-scale+pad": ("fourier", straightforward(METHODS["fourier"]), "fp32"),
           "maco": ("maco", None, "fp32"),
           "maco, photos' spectrum": ("maco", photo_spectrum_maco(), "fp32")}
    if bf16_is_fast(dev):  # where bf16 is native, its quality decides whether it may become the default
        out["fourier bf16"] = ("fourier", None, "bf16")
    return out


def photo_spectrum_maco() -> Method:
    """MACO with the magnitude spectrum estimated from the bundled photos instead of ImageNet's."""
    return replace(METHODS["maco"], make_param=lambda gens, size: maco_image(gens, size, spectrum="photos"))


def quality_section(b: Bench) -> dict:
    """Every method (and variants of the default) on a sample of channels from every layer, same seeds; the
    activation is measured against the channel's best response in the bundled photos, as in the app."""
    cfg, dev = b.cfg, b.dev
    size, steps = cfg.quality_size, cfg.quality_steps
    refs = {name: _reference(b.model, name, b.log) for name in cfg.quality_layers}
    per_method = {}
    for label, (method, recipe, precision) in quality_candidates(dev).items():
        rows = []
        for name in cfg.quality_layers:
            chans = sample_channels(name, cfg.quality_per_layer)
            r = render(b.settings(name, method, size=size, steps=steps, precision=precision), chans, dev, recipe=recipe)
            rob = robustness(b.model, name, r.images, chans)
            wide = robustness(b.model, name, r.images, chans, family="wide")
            for i, c in enumerate(chans):
                ref = float(refs[name][c])
                summ = summarize(r.images[i], r.history[:, i], float(r.final_activation[i]),
                                 ref if np.isfinite(ref) else None)
                rows.append({"layer": name, "channel": int(c), **summ, "robustness": float(rob[i]),
                             "robustness_wide": float(wide[i])})
        per_method[label] = rows
        b.log(f"{label}: {sum(1 for row in rows if row['flags'])}/{len(rows)} flagged")
    nat_hf = [hf_fraction((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for x in natural_crops(size)]
    div_layer, div_channel = "conv4_1", 7
    div_imgs = [render(b.settings(div_layer, size=size, steps=steps, seed=k), [div_channel], dev).images[0]
                for k in range(3)]
    return {"size": size, "steps": steps, "per_method": per_method,
            "natural_hf_median": float(np.median(nat_hf)), "natural_hf_p95": float(np.percentile(nat_hf, 95)),
            "diversity": {"layer": div_layer, "channel": div_channel, "seeds": 3,
                          "value": diversity(np.stack(div_imgs))}}


def peer_section(b: Bench) -> dict:
    """Ours (the default recipe) and Lucent's default recipe on the same channels, size and steps, each channel
    rendered alone by both, interleaved so that both see the same machine; one judge for both."""
    why = lucent_unusable(b.dev)
    if why:
        b.log(why)
        return {"skipped": why}
    cfg, dev = b.cfg, b.dev
    size, steps = cfg.peer_size, cfg.peer_steps
    rows, images = [], {}
    for name in cfg.peer_layers:
        chans = sample_channels(name, cfg.peer_per_layer)
        ours, maco = b.settings(name, size=size, steps=steps), b.settings(name, "maco", size=size, steps=steps)
        render(replace(ours, steps=2), [chans[0]], dev)  # warm-up of all: one-off costs out of the timings
        render(replace(maco, steps=2), [chans[0]], dev)
        lucent_render(b.model, name, chans[0], size, 2)
        got = {k: ([], []) for k in PEER_METHODS}
        for c in chans:
            for key, fn in (("ours", lambda: render(ours, [c], dev).images[0]),
                            ("maco", lambda: render(maco, [c], dev).images[0]),
                            ("lucent", lambda: lucent_render(b.model, name, c, size, steps, seed=ours.seed).image)):
                image, sec = wall_time(fn)
                got[key][0].append(image)
                got[key][1].append(sec)
        ref = _reference(b.model, name, b.log)
        judged = {k: judge(b.model, name, np.stack(imgs), chans, ref) for k, (imgs, _) in got.items()}
        for i, c in enumerate(chans):
            rows.append({"layer": name, "channel": c, "reference": float(ref[c]),
                         **{k: {**judged[k][i], "seconds": got[k][1][i]} for k in got}})
            o, lu = rows[-1]["ours"], rows[-1]["lucent"]
            b.log(f"peer {name}:{c}: robustness (wide) {o['robustness_wide']:.2f} vs {lu['robustness_wide']:.2f}, "
                  f"clipped {o['clipped']:.3f} vs {lu['clipped']:.3f}, colourfulness {o['colourfulness']:.0f} vs "
                  f"{lu['colourfulness']:.0f}, {o['seconds']:.1f} s vs {lu['seconds']:.1f} s")
        images[name] = {k: np.stack(imgs) for k, (imgs, _) in got.items()}
    b.res.setdefault("_images", {})["peer"] = images  # for the report's picture, not for bench.json
    return {"peer": "lucent", "version": LUCENT_VERSION, "size": size, "steps": steps,
            "per_layer": cfg.peer_per_layer, "rows": rows}
