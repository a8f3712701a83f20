import json

from viz.bench import forward_flops, run_bench


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
    assert json.loads((tmp_path / "bench.json").read_text())["baseline"]["speedup"] > 0
    assert (tmp_path / "bench_speed.png").stat().st_size > 0 and (tmp_path / "bench_quality.png").is_file()
    assert res["peak_gflops"] > 0 and all(r["s_per_step_per_channel"] > 0 for r in res["per_layer"])
    # the quality sample covers both methods on the same channels
    q = res["quality"]["per_method"]
    assert [(r["layer"], r["channel"]) for r in q["seed"]] == [(r["layer"], r["channel"]) for r in q["fourier"]]
