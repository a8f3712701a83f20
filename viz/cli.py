"""Command line: ``python -m viz {render,factors,layers,precompute,examples,circuit,bench} ...``.

Bad arguments end with exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .atlas.circuits import circuit
from .atlas.contributions import contribution_table, table_ready
from .atlas.examples import examples_dir, scan
from .atlas.factors import check_k, group_picture, photo_factors
from .atlas.metrics import naturalness
from .atlas.precompute import layer_channels, precompute
from .atlas.records import config_name
from .base.corpus import load_photo, resolve
from .base.errors import VizError
from .base.files import check_output_dir, check_output_file, safe_name
from .base.images import IMAGE_FORMATS, save_png
from .base.progress import ProgressBar
from .bench import benchmark
from .bench.benchmark import run_bench
from .engine.device import resolve_device
from .engine.layers import LAYER_NAMES, LAYERS, get_layer, parse_channel
from .engine.methods import DEFAULT_METHOD
from .engine.model import load_model
from .engine.objectives import direction_digest, read_direction
from .engine.render import render
from .engine.settings import DEFAULT_SIZE, DEFAULT_STEPS, MAX_BATCH, MAX_SIZE, MIN_SIZE, make_settings, parse_int
from .engine.views import KINDS as VIEW_KINDS
from .engine.views import make_view, start_photo, top_channel
from .engine.weights import resolve_weights_name
from .serving.cluster_runs import precompute as ray_precompute
from .serving.cluster_runs import scan as ray_scan


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise VizError(f"{message} (see {self.prog} --help)")


def _common_render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=DEFAULT_METHOD,
                   help="fourier (default, modern), maco (magnitude-constrained; also writes STEM.attribution.png) "
                        "or seed (the naive baseline)")
    p.add_argument("--size", default=str(DEFAULT_SIZE), help=f"image side in pixels, {MIN_SIZE}-{MAX_SIZE} (default {DEFAULT_SIZE})")
    p.add_argument("--steps", default=str(DEFAULT_STEPS), help=f"optimization steps (default {DEFAULT_STEPS})")
    p.add_argument("--lr", default=None, help="learning rate (default: the method's)")
    p.add_argument("--seed", default="0", help="random seed (default 0)")
    p.add_argument("--weights", default="auto", help="oxford, torchvision or a path to a state dict (default: "
                   "torchvision if cached, else oxford)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda or mps")
    p.add_argument("--activation", default=None, choices=["pre", "post"], help="objective before or after the ReLU")
    p.add_argument("--precision", default="auto", help="auto (= fp32), fp32 or bf16 (bf16 autocast is opt-in; fast only where bf16 is native)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m viz", description="VGG16 Feature Atlas: activation maximization for VGG16.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("render", help="render one channel to a PNG and print a JSON line")
    r.add_argument("--layer", required=True, help="conv1_1 ... conv5_3")
    r.add_argument("--channel", default=None, help="channel number (required, except with --objective direction); "
                   "for --objective mix a sum like 104+0.5*25 or an interpolation 104~25 (with --count)")
    r.add_argument("--objective", default="channel", choices=list(VIEW_KINDS),
                   help="what to render: the channel's mean (default), one neuron, its negative, N diverse images, "
                   "a mix of channels, an accentuated photo (accent) or a direction over all the channels")
    r.add_argument("--count", default=None, help="images: diversity (default 4) or an interpolating mix; "
                   "writes STEM-0.png ... STEM-(N-1).png")
    r.add_argument("--x", default=None, help="neuron: horizontal position, a fraction of the map (default 0.5)")
    r.add_argument("--y", default=None, help="neuron: vertical position, a fraction of the map (default 0.5)")
    r.add_argument("--weight", default=None, help="diversity / accent: weight of the extra term (default 1)")
    r.add_argument("--start", default=None, help="accent: the photo to start from (a file or a bundled photo "
                   "name, e.g. astronaut)")
    r.add_argument("--direction", default=None, help="direction / accent: a vector over the layer's channels, a "
                   ".npy file or weights like 104:0.7,25:0.3 (unit length is taken; the image is filed under its "
                   "largest channel)")
    r.add_argument("--cos", default=None, help="direction: cosine power of the cosine-weighted variant (default 0: "
                   "the plain dot product)")
    _common_render_args(r)
    r.add_argument("--out", required=True, help="output .png path")

    f = sub.add_parser("factors", help="the groups a layer sees in a photo (NMF): maps.npy, directions.npy, "
                                        "groups.png, optionally each group rendered; one JSON line")
    f.add_argument("--image", required=True, help="a photo file or a bundled photo's name (e.g. chelsea)")
    f.add_argument("--layer", required=True, help="conv1_1 ... conv5_3")
    f.add_argument("--k", default="6", help="groups, 2-8 (default 6)")
    f.add_argument("--render", action="store_true", help="also render each group's direction: group-I.png")
    _common_render_args(f)  # the renders' settings (--seed also seeds the factorization)
    f.add_argument("--out", required=True, help="output folder")

    sub.add_parser("layers", help="print the layer table as JSON lines")

    g = sub.add_parser("precompute", help="render a gallery: resumable, batched, crash-safe")
    g.add_argument("--layers", required=True, help="comma-separated layers, e.g. conv1_1,conv2_1")
    g.add_argument("--channels", default="all", help="all, 0-63 or 25,104,116 (per layer; default all)")
    _common_render_args(g)
    g.add_argument("--batch", default="8", help="channels rendered together (default 8)")
    g.add_argument("--retries", default="1", help="retries for a flagged channel: new seed, twice the steps")
    g.add_argument("--out", default="gallery", help="gallery root (default gallery/)")
    g.add_argument("--image-format", default="png", choices=list(IMAGE_FORMATS),
                   help="how new images are stored: png (lossless, default) or jpeg (quality 95, full colour "
                        "resolution: about 60 %% of the size, no visible difference at 4x)")
    _ray_args(g)  # issue 14: Ray

    e = sub.add_parser("examples", help="scan a folder of photos (or the bundled ones) for each channel's dataset "
                                         "examples: resumable, one JSON summary line")
    e.add_argument("--images", required=True, help="a folder (recursive: jpg, png, webp, bmp, tiff) or bundled")
    e.add_argument("--weights", default="auto", help="oxford, torchvision or a path to a state dict")
    e.add_argument("--layers", default="all", help="all (default) or comma-separated layers")
    e.add_argument("--top", default="16", help="examples kept per channel, strongest and most negative (default 16)")
    e.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda or mps")
    e.add_argument("--out", default="gallery", help="gallery root (default gallery/)")
    _ray_args(e)  # issue 14: Ray

    c = sub.add_parser("circuit", help="what a channel is built from in the conv layer below (or feeds above): "
                                       "one JSON line")
    c.add_argument("--layer", required=True, help="conv1_1 ... conv5_3")
    c.add_argument("--channel", required=True, help="channel number")
    c.add_argument("--top", default="8", help="strongest excitatory and inhibitory links listed (default 8)")
    c.add_argument("--by", default="weight", choices=["weight", "contribution"],
                   help="weight: the connecting kernel's sum; contribution: the share of the channel's "
                        "pre-activation each input supplies at its strongest positions in the bundled photos")
    c.add_argument("--direction", default="in", choices=["in", "out"],
                   help="in: what builds the channel (default); out: what it feeds")
    c.add_argument("--depth", default="1", choices=["1", "2"],
                   help="1: the next conv layer; 2: two away, by expanded weights (weight only)")
    c.add_argument("--weights", default="auto", help="oxford, torchvision or a path to a state dict")


    benchmark.add_parser(sub)
    return parser


# --- issue 14: Ray (viz/serving/cluster.py and cluster_runs.py hold the Ray code; nothing here imports ray) -------
def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", default=None, metavar="ADDRESS|local", help="run on a Ray cluster: its address "
                   "(ray://head:10001 or head:6379) or local (start one here); unset: in this process")
    p.add_argument("--workers", default=None, help="with --ray: Ray workers (default: one per CPU of the cluster, "
                   "one per GPU with --device cuda)")


def _ray_workers(args: argparse.Namespace) -> int | None:
    if args.workers is None:
        return None
    if not args.ray:
        raise VizError("--workers needs --ray ADDRESS|local")
    return parse_int("workers", args.workers, 1, 1024)
# --- end issue 14 ------------------------------------------------------------------------------------------


def _notice(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def _view_from_args(args: argparse.Namespace, layer: str):
    """The view the render flags ask for, and the accent view's photo; one line on a bad combination."""
    photo = digest = vector = None
    if args.direction is not None:
        if args.objective not in ("direction", "accent"):
            raise VizError("--direction is for --objective direction or accent")

        vector = read_direction(args.direction, layer)
    elif args.objective == "direction":
        raise VizError("--objective direction needs --direction FILE.npy or channel weights like 104:0.7,25:0.3")
    if args.start is not None:
        if args.objective != "accent":
            raise VizError("--start is for --objective accent")
        photo, digest, _ = start_photo(load_photo(args.start))
    elif args.objective == "accent":
        raise VizError("--objective accent needs --start PHOTO")
    if args.channel is None and vector is None:
        raise VizError("--channel is required (except with --direction)")
    if args.channel is not None and vector is not None:
        raise VizError("with --direction leave out --channel: the image is filed under the direction's largest weight")
    mix = args.channel if args.objective == "mix" else None
    view = make_view(args.objective, layer, count=args.count, x=args.x, y=args.y, mix=mix, start=digest or "",
                     weight=args.weight, direction="" if vector is None else direction_digest(vector),
                     cos=args.cos)
    return view, photo, vector


def cmd_render(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, ".png")  # before any work: a bad --out never wastes a render
    layer = get_layer(args.layer).name
    view, photo, vector = _view_from_args(args, layer)
    n = view.images_per_channel()
    outs = [out] if n == 1 else [check_output_file(str(out.with_name(f"{out.stem}-{i}{out.suffix}")), ".png")
                                 for i in range(n)]
    device = resolve_device(args.device)
    settings = make_settings(layer, args.method, args.size, args.steps, args.lr, args.seed, args.weights,
                             args.activation, args.precision, device, view=view)
    if vector is not None:
        channel = top_channel(vector)  # filed under its largest weight
    else:
        channel = view.primary if view.primary is not None else parse_channel(get_layer(layer), args.channel)
    bar = ProgressBar(settings.steps, f"{layer}:{channel} {settings.method} {settings.view}", unit="step")
    every = max(1, settings.steps // 200)
    result = render(settings, [channel], device, every=every, notice=_notice, start=photo, direction=vector,
                    callback=lambda s: bar.update(s.step, f"act {s.activation[0]:.3g}"))
    bar.close()
    for path, image in zip(outs, result.images):
        try:
            save_png(path, image)
        except OSError as exc:
            raise VizError(f"cannot write {str(path)[:60]!r}: {exc.strerror}") from None
    rec = result.record(0)
    if result.attribution is not None:  # MACO's transparency map beside each image: STEM.attribution.png
        maps = [path.with_name(f"{path.stem}.attribution.png") for path in outs]
        for path, amap in zip(maps, result.attribution):
            try:
                save_png(path, np.round(amap * 255).astype(np.uint8))
            except OSError as exc:
                raise VizError(f"cannot write {str(path)[:60]!r}: {exc.strerror}") from None
        rec["attribution"] = [str(p) for p in maps] if n > 1 else str(maps[0])
    rec.update(naturalness(result.images[0]))
    if n == 1:
        rec["out"] = str(out)
    else:
        rec["outs"] = [str(p) for p in outs]
        rec["final_activation"] = [float(v) for v in result.final_activation]
        rec["channels"] = [int(c) for c in result.channels]  # what each image is filed and measured under
    print(json.dumps(rec, allow_nan=False))
    return 0


def cmd_factors(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out)  # before any work
    layer = get_layer(args.layer).name
    k = check_k(args.k)
    device = resolve_device(args.device)
    # every render flag is checked now, not after the factorization (and without --render too)
    base = make_settings(layer, args.method, args.size, args.steps, args.lr, args.seed, args.weights,
                         args.activation, args.precision, device)
    try:
        photo = load_photo(args.image)
    except VizError as exc:
        raise VizError(exc if str(exc).startswith("no photo") else f"{str(args.image)[:60]}: {exc}") from None
    model = load_model(base.weights, device, channels_last=device.type == "cpu", notice=_notice)
    f = photo_factors(model, photo, layer, k, base.seed)
    files = {"maps": out / "maps.npy", "directions": out / "directions.npy", "groups": out / "groups.png"}
    try:
        np.save(files["maps"], f.maps)
        np.save(files["directions"], f.directions)
        save_png(files["groups"], group_picture(f))
    except OSError as exc:
        raise VizError(f"cannot write in {str(out)[:60]!r}: {exc.strerror}") from None
    rec = {**f.record(), "image": str(args.image), "weights": base.weights,
           "directions_digest": [direction_digest(d) for d in f.directions],
           **{name: str(path) for name, path in files.items()}}
    if args.render:
        renders = []
        for i, vec in enumerate(f.directions):
            view = f"direction({direction_digest(vec)})"
            settings = make_settings(layer, args.method, args.size, args.steps, args.lr, args.seed, args.weights,
                                     args.activation, args.precision, device, view=view)
            bar = ProgressBar(settings.steps, f"{layer} group {i} ({view})", unit="step")
            result = render(settings, [top_channel(vec)], device, every=max(1, settings.steps // 200),
                            notice=_notice, direction=vec, callback=lambda s, b=bar: b.update(s.step))
            bar.close()
            path = out / f"group-{i}.png"
            try:
                save_png(path, result.images[0])
            except OSError as exc:
                raise VizError(f"cannot write {str(path)[:60]!r}: {exc.strerror}") from None
            renders.append({"out": str(path), "view": settings.view,
                            "final_activation": float(result.final_activation[0]),
                            "seconds": round(result.seconds, 3)})
        rec["renders"] = renders
    print(json.dumps(rec, allow_nan=False))
    return 0


def cmd_precompute(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out)  # before any work: an unwritable --out fails now, not after hours
    workers = _ray_workers(args)  # issue 14: with --ray the workers pick their own device (a CPU head may drive GPUs)
    device = resolve_device(args.device) if not args.ray else None
    layers = layer_channels(args.layers.split(","), args.channels)
    settings = make_settings(next(iter(layers)), args.method, args.size, args.steps, args.lr, args.seed,
                             args.weights, args.activation, args.precision, device)
    batch = parse_int("batch", args.batch, 1, MAX_BATCH)
    retries = parse_int("retries", args.retries, 0, 3)
    bar: list[ProgressBar] = []
    t0 = time.perf_counter()

    def progress(done: int, total: int, text: str) -> None:
        if not bar:
            bar.append(ProgressBar(total, "precompute", unit="img-step", start=t0))
        bar[0].total = max(total, 1)  # grows when a flagged channel is queued for a retry
        bar[0].update(done, text)

    print(f"gallery {out / safe_name(settings.weights) / config_name(settings)}: "
          f"{sum(map(len, layers.values()))} channels in {len(layers)} layers", file=sys.stderr)
    if args.ray:  # issue 14

        report = ray_precompute(args.ray, out, settings, layers, batch=batch, device=args.device, retries=retries,
                                workers=workers, progress=progress, notice=_notice, image_format=args.image_format)
    else:
        report = precompute(out, settings, layers, batch=batch, device=str(device), retries=retries,
                            progress=progress, notice=_notice, image_format=args.image_format)
    if bar:
        bar[0].close()
    print(json.dumps({"rendered": report.rendered, "skipped": report.skipped, "retried": report.retried,
                      "flagged": report.flagged, "seconds": round(report.seconds, 1),
                      "cancelled": report.cancelled}, allow_nan=False))
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out)
    corpus = resolve(args.images)
    layers = list(LAYER_NAMES) if args.layers == "all" else [get_layer(n.strip()).name for n in args.layers.split(",")]
    top = parse_int("top", args.top, 1, 256)
    workers = _ray_workers(args)  # issue 14
    bar: list[ProgressBar] = []

    def progress(done: int, total: int, text: str) -> None:
        if not bar:
            bar.append(ProgressBar(total, f"examples {corpus.name}", unit="img"))
        bar[0].update(done, text)

    if args.ray:  # issue 14

        report = ray_scan(args.ray, args.weights, corpus, out, layers, top, device=args.device, workers=workers,
                          progress=progress, notice=_notice)
        weights_name = resolve_weights_name(args.weights)
    else:
        model = load_model(args.weights, resolve_device(args.device), notice=_notice)
        report = scan(model, corpus, out, layers, top, progress=progress, notice=_notice)
        weights_name = model.weights_name
    if bar:
        bar[0].close()
    where = report.out or examples_dir(out, weights_name, corpus.name)
    print(json.dumps({"out": str(where), "images": len(corpus.images),
                      "read": report.images, "skipped": len(report.skipped), "skipped_why": report.skipped,
                      "new": report.new, "resumed_after": report.resumed, "seconds": round(report.seconds, 1)},
                     allow_nan=False))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    res = run_bench(args.quick, Path(args.out), args.weights, args.device,
                    log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps({"out": str(Path(args.out) / "BENCHMARKS.md"), "speedup_vs_baseline": res["baseline"]["speedup"],
                      "loop_overhead_pct": res["overhead"]["overhead_pct"]}))
    return 0


def cmd_circuit(args: argparse.Namespace) -> int:
    model = load_model(args.weights, "cpu", notice=_notice)
    if args.by == "contribution" and not table_ready(model):
        bar = ProgressBar(1, "reading the bundled photos (once per weights)", unit="pass")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        contribution_table(model, progress=progress)
        bar.close()
    start = time.perf_counter()
    c = circuit(model, args.layer, args.channel, args.direction, args.by, args.depth, args.top, notice=_notice)
    out = {**c.to_json(), "weights": model.weights_name, "seconds": round(time.perf_counter() - start, 4)}
    print(json.dumps(out, allow_nan=False))
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    for layer in LAYERS.values():
        print(json.dumps({"name": layer.name, "index": layer.index, "channels": layer.channels,
                          "receptive_field": layer.receptive_field, "stride": layer.stride}))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler = {"render": cmd_render, "layers": cmd_layers, "precompute": cmd_precompute, "bench": cmd_bench,
                   "examples": cmd_examples, "circuit": cmd_circuit, "factors": cmd_factors}[args.command]
        return handler(args)
    except VizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no (disk full, permissions...): one line, never a traceback
        where = f" ({str(exc.filename)[:60]})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
