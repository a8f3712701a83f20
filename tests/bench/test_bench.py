import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from viz.bench.benchmark import run_bench
from viz.bench.config import BenchConfig
from viz.bench.report import peer_summary
from viz.bench.sections import forward_flops


def test_forward_flops_by_hand():
    assert forward_flops("conv1_1", 32) == 2 * 3 * 9 * 64 * 32 * 32
    # conv2_1 runs at half resolution after the first pool
    assert forward_flops("conv2_1", 32) == forward_flops("conv1_2", 32) + 2 * 64 * 9 * 128 * 16 * 16
    assert forward_flops("conv1_2", 32, 2) == forward_flops("conv1_1", 32) + 2 * 64 * 9 * 2 * 32 * 32


def test_quick_bench_writes_its_report(tmp_path):
    """A smoke run of the real benchmark (numbers are not asserted: speed belongs to the benchmark)."""
    res = run_bench(quick=True, out=tmp_path, device="cpu", log=lambda m: None)
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Default vs straightforward baseline" in report and "| fourier |" in report and "| seed |" in report
    assert "| maco |" in report and "median clipped" in report
    assert json.loads((tmp_path / "bench.json").read_text())["baseline"]["speedup"] > 0
    assert (tmp_path / "bench_speed.png").stat().st_size > 0 and (tmp_path / "bench_quality.png").is_file()
    assert res["speed"]["peak_gflops"] > 0 and all(r["s_per_step_per_channel"] > 0 for r in res["speed"]["per_layer"])
    # the quality sample covers both methods on the same channels
    q = res["quality"]["per_method"]
    assert [(r["layer"], r["channel"]) for r in q["seed"]] == [(r["layer"], r["channel"]) for r in q["fourier"]]
    # every target is stated with a verdict computed from the numbers
    assert report.count("(target at least") + report.count("(target at most") == 3
    assert report.count("**met**") + report.count("**not met**") >= 3
    # the peer row is there, or one line says what it needs
    assert "## Against Lucent" in report
    assert "## Circuits" in report and res["circuits"]["calls"] > 0 and res["circuits"]["max_ms"]["weight"] > 0




def test_lucent_sees_our_network(model):
    """The wrapper Lucent hooks computes exactly our cut network's pre-ReLU map, under Lucent's layer name."""
    pytest.importorskip("lucent")
    from lucent.modelzoo.util import get_model_layers

    from viz.bench.peers import LucentVGG
    from viz.engine.layers import get_layer

    net = LucentVGG(model, "conv2_2")
    assert net.layer_name in get_model_layers(net)
    assert net.layer_name == f"features_{len(net.features) - 1}"  # the target conv is the last module
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        ours = model.cut(get_layer("conv2_2"))(x)
        grabbed = {}
        hook = net.features[-1].register_forward_hook(lambda m, i, o: grabbed.setdefault("a", o))
        net(x)
        hook.remove()
    torch.testing.assert_close(grabbed["a"], ours)
    assert (grabbed["a"] < 0).any()  # pre-ReLU: no ReLU of the base wrote over it in place


def test_lucent_renders_our_channel(model):
    """Lucent's render on our weights moves its image away from its start (the objective reaches our channel)
    and does not reproduce ours."""
    pytest.importorskip("lucent")
    from lucent.optvis import param

    from viz.bench.peers import _seeded, lucent_render
    from viz.engine.render import channel_activation, render
    from viz.engine.settings import make_settings

    layer, channel, size = "conv3_1", 0, 40
    peer = lucent_render(model, layer, channel, size, 8)
    with _seeded(0):
        start = (param.image(size)[1]().detach()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ours = render(make_settings(layer, "fourier", size=size, steps=8), [channel], "cpu").images[0]
    assert peer.image.shape == ours.shape == (size, size, 3) and peer.seconds > 0
    assert np.abs(peer.image.astype(float) - start).mean() > 2
    assert np.abs(peer.image.astype(float) - ours).mean() > 2
    act = channel_activation(model, layer, torch.from_numpy(np.stack([start, peer.image])).permute(0, 3, 1, 2)
                             .float() / 255, [channel, channel])
    assert act[1] > act[0]
    again = lucent_render(model, layer, channel, size, 8)
    assert np.array_equal(again.image, peer.image)  # seeded: the same image twice


def test_peer_row_in_the_bench(tmp_path):
    """The peer section on one channel, tiny: both methods judged, every measure finite, targets stated."""
    pytest.importorskip("lucent")
    cfg = replace(BenchConfig.quick_run(), peer_layers=("conv3_1",), peer_size=40, peer_steps=8, peer_per_layer=1)
    res = run_bench(True, tmp_path, device="cpu", log=lambda m: None, sections=("peer",), config=cfg)
    (row,) = res["peer"]["rows"]
    for who in ("ours", "maco", "lucent"):
        m = row[who]
        assert all(math.isfinite(m[k]) for k in ("activation", "robustness", "robustness_wide", "hf", "seconds",
                                                   "clipped", "colourfulness", "colour_distance")), m
        assert m["ratio"] is not None and math.isfinite(m["ratio"]) and m["seconds"] > 0
        assert m["ratio"] == pytest.approx(m["activation"] / row["reference"])
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Against Lucent" in report and "Targets met: **" in report and "| conv3_1 | 0 |" in report
    assert "median clipped share" in report and "wide family" in report and "| MACO |" in report
    assert (tmp_path / "bench_peer.png").stat().st_size > 0
    assert "_images" not in json.loads((tmp_path / "bench.json").read_text())


def test_peer_verdicts_follow_the_numbers():
    def row(rob_o, rob_l, hf_o=0.05, hf_l=0.2, r_o=1.0, r_l=1.0, s_o=1.0, s_l=3.0, clip=0.01, col_o=50.0,
            layer="conv3_1"):
        def m(ratio, rob, hf, sec, clipped, colour):
            return {"ratio": ratio, "robustness": 0.5, "robustness_wide": rob, "hf": hf, "seconds": sec,
                    "clipped": clipped, "colourfulness": colour, "colour_distance": 30.0}

        return {"layer": layer, "ours": m(r_o, rob_o, hf_o, s_o, clip, col_o), "maco": m(0.5, 0.5, 0.01, 1.0, 0, 40),
                "lucent": m(r_l, rob_l, hf_l, s_l, 0.01, 100.0)}

    good = peer_summary([row(0.8, 0.7), row(0.8, 0.7), row(0.6, 0.7)])
    assert good["wins"] == 2 and good["wins_needed"] == 2 and all(good["checks"].values())
    bad = peer_summary([row(0.6, 0.7, hf_o=0.3, r_o=0.8, s_l=2.0, clip=0.2, col_o=150.0)] * 3)
    assert not any(bad["checks"].values())
    # naturalness must hold in every layer: one garish layer fails the target however good the others are
    mixed = peer_summary([row(0.8, 0.7)] * 5 + [row(0.8, 0.7, clip=0.3, col_o=120.0, layer="conv1_1")])
    assert mixed["ours"]["clipped"] < 0.05 and not mixed["checks"]["clipped"]
    assert not mixed["checks"]["colourfulness"] and mixed["checks"]["activation"]


def test_bench_without_lucent_says_so_in_one_line(tmp_path, monkeypatch):
    import viz.bench.peers

    monkeypatch.setattr(viz.bench.peers, "lucent_available", lambda: False)
    lines = []
    res = run_bench(True, tmp_path, device="cpu", log=lines.append, sections=("peer",))
    said = [line for line in lines if not line.startswith("[")]  # not the section timings
    assert said == [viz.bench.peers.LUCENT_MISSING] and "torch-lucent" in said[0]
    assert res["peer"] == {"skipped": viz.bench.peers.LUCENT_MISSING}
    assert "Not measured in this run" in (tmp_path / "BENCHMARKS.md").read_text()


def test_the_precision_verdict_reads_the_numbers_as_shown():
    """bf16 is "a loss" only where a number it is judged on is lower at the two decimals shown: a difference in
    the third decimal (the run's noise) must not turn equal numbers into a verdict against it."""
    from viz.bench.report import precision_line

    res = {"machine": {"bf16_native": True, "default_precision": "fp32"}, "variants": []}
    fp32 = {"ratio": 1.3012, "robust": 0.6521, "flagged": 0}
    same = precision_line(res, {"fourier": fp32, "fourier bf16": {"ratio": 1.2981, "robust": 0.6498, "flagged": 0}})
    assert "1.30 vs 1.30" in same and "no loss" in same and "a loss" not in same
    lower = precision_line(res, {"fourier": fp32, "fourier bf16": {"ratio": 1.30, "robust": 0.63, "flagged": 0}})
    assert "a loss, so fp32 stays" in lower
    flagged = precision_line(res, {"fourier": fp32, "fourier bf16": {**fp32, "flagged": 1}})
    assert "a loss" in flagged


def test_the_report_names_only_render_configs_of_the_committed_gallery():
    """gallery/oxford also holds examples/ and circuits/ (data, not renders): the chosen defaults name neither."""
    from viz.bench.report import committed_gallery

    text = committed_gallery("oxford")
    assert "fourier-128px-128st" in text and "circuits" not in text and "examples" not in text


def test_a_child_process_reports_its_own_peak_not_its_parents():
    """The bench measures memory in fresh processes while it holds gigabytes itself; each must report its own."""
    from viz.bench.sections import child_peak

    ballast = bytearray(600 * 2**20)  # the parent's peak: over 600 MB, every page touched
    ballast[::4096] = b"\1" * len(ballast[::4096])
    small = child_peak("x = bytearray(20 * 2**20)")
    big = child_peak("x = bytearray(200 * 2**20); x[::4096] = b'\\1' * len(x[::4096])")
    del ballast
    assert 0 < small["rss_mb"] < 300  # a bare Python with 20 MB, far below the parent's 600 MB
    assert big["rss_mb"] - small["rss_mb"] > 150  # and it sees what it touches itself
