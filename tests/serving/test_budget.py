"""Budgets: estimates against measured times, the memory ceiling at the largest size the server accepts."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from viz import make_settings
from viz.serving.budget import Limits, estimate_seconds, largest_size, largest_steps, max_size, pixel_share

MEMORY_PROBE = """
import json, sys
import pandas, plotly.graph_objects, streamlit  # what the dashboard's process holds besides the engine
import numpy as np
from viz import make_settings
from viz.atlas.metrics import summarize
from viz.base.images import png_bytes, unstrip
from viz.base.memory import peak_bytes, reset_peak
from viz.engine.views import parse_view
from viz.serving.budget import Limits
from viz.serving.jobs import JobManager, JobSpec, wait



lim = Limits.from_env()
m = JobManager(lim, disk_cache=None, short_seconds=0)
out = []
for requests in json.loads(sys.argv[1]):  # rounds, one after another; a round's requests come in at once
    asked = []
    for j, request in enumerate(requests):  # each for its own channel
        sides = [side.split(":", 1) for side in request.split("+")]  # method:view (Compare: two)
        size = min(lim.cap(make_settings("conv5_3", method, size=64, steps=4, view=view)) for method, view in sides)
        # 2 steps: the 2nd at full size (coarse-to-fine), with the optimizer's state; the right side keeps a snapshot
        specs = [JobSpec(make_settings("conv5_3", method, size=size, steps=2, view=view), j, "cpu", (1,) if i else ())
                 for i, (method, view) in enumerate(sides)]
        m.check_request(specs)  # the server accepts it
        asked.append((request, size, specs))
    reset_peak()  # the peak from here: what is resident now, and this round
    # no session: the probe sends no heartbeats (a visitor's jobs would stop once its session timed out)
    jobs = [m.submit_many(specs) for _, _, specs in asked]
    for (request, size, specs), request_jobs in zip(asked, jobs):
        request_jobs = [wait(job, 1200) for job in request_jobs]
        if all(job.state == "done" for job in request_jobs):  # and what the page computes from the results
            for spec, job in zip(specs, request_jobs):
                r = job.result
                summarize(r.image, np.array(r.history), r.final_activation, r.natural)
                views = parse_view(spec.settings.view, "conv5_3").images_per_channel()
                [png_bytes(im) for im in unstrip(r.image, views)]
        out.append({"request": request, "size": size, "states": [job.state for job in request_jobs],
                    "errors": [job.error for job in request_jobs]})
    out[-1]["peak_bytes"] = peak_bytes()
    del jobs, request_jobs
print(json.dumps(out))
m.shutdown()
"""
# The largest job of each kind a server accepts, run as a server runs them: one request after another in one
# process (three processes of about equal work, so that the parallel run spreads them: a seed render costs about
# two fourier ones, every step at full size). One slot: each method, a 16-image view, and Compare's pair at seed's
# cap (one request: the two jobs in turn in one slot, the right side keeping a snapshot), after a fourier render.
# Two slots: two visitors' largest renders at once.
ROUNDS = {"one-slot-compare": (1, [["fourier:channel"], ["seed:channel+seed:negative"]]),
          "one-slot-methods-views": (1, [["maco:channel"], ["seed:channel"], ["fourier:diversity(n=16,w=1)"]]),
          "two-slots": (2, [["fourier:channel", "fourier:channel"]])}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads and resets Linux's peak RSS")
@pytest.mark.parametrize("name", list(ROUNDS))
def test_the_largest_accepted_job_of_each_kind_stays_under_the_memory_ceiling(name):
    """Issue 24: the largest job the server accepts of each method and of a 16-image view, each one request run
    through the job manager in a process holding what the dashboard holds, then the page's metrics and PNG
    downloads computed from its results, peaks under the server's memory ceiling: a memory check, not a timing
    one. The requests run in turn in one process, as a server runs them, each round measured from what is resident
    before it (the kernel's peak RSS reset between rounds), so what an earlier job left behind counts against the
    next; with two slots, two visitors' largest renders run at once and share the ceiling."""
    slots, rounds = ROUNDS[name]
    # never cut short; two threads, as a server has, whatever the parallel test run gives its workers (a memory
    # check: the threads' own buffers count, the time does not)
    env = {**os.environ, "VIZ_MAX_RUNNING": str(slots), "VIZ_MAX_JOB_SECONDS": "7200", "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, "-c", MEMORY_PROBE, json.dumps(rounds)], capture_output=True,
                       text=True, timeout=2400, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    ceiling = Limits(max_running=slots).memory_gb * 1e9
    assert [r["request"] for r in results] == [request for round_ in rounds for request in round_]
    for r in results:
        assert r["states"] == ["done"] * len(r["request"].split("+")), r
        assert r["size"] >= (128 if "diversity" in r["request"] else 512 if slots == 1 else 384), r
        assert r.get("peak_bytes", 0) < ceiling, (r, ceiling)
    # every round's peak was read (the last request of a round carries it): none was left unmeasured
    ends = list(itertools.accumulate(len(round_) for round_ in rounds))
    assert all(results[i - 1].get("peak_bytes", 0) > 1e8 for i in ends), [r.get("peak_bytes") for r in results]


def test_estimates_scale_with_the_counted_work():
    """No stopwatch (a shared machine's speed drifts): the estimate follows the work it counts. Steps add time
    linearly, the per-step compute grows with the pixels, a view of N images costs N images, coarse-to-fine
    octaves cost their pixel share, the learnt speed divides it all, and deeper layers (more FLOPs per pixel)
    never cost less."""
    from viz.bench.sections import forward_flops
    from viz.serving.budget import START_SECONDS, STEP_OVERHEAD, STEP_SECONDS_128, full_step_seconds

    def est(layer="conv4_2", method="fourier", size=128, steps=64, view="channel", speed=1.0):
        return estimate_seconds(make_settings(layer, method, size=size, steps=steps, view=view), speed)

    compute = est(steps=64) - START_SECONDS - 64 * STEP_OVERHEAD
    assert est(steps=128) - START_SECONDS == pytest.approx(2 * (est(steps=64) - START_SECONDS), rel=0.01)
    assert est(size=256) - START_SECONDS - 64 * STEP_OVERHEAD == pytest.approx(4 * compute)
    assert est(view="diversity(n=4,w=1)") - START_SECONDS - 64 * STEP_OVERHEAD == pytest.approx(4 * compute)
    assert compute == pytest.approx(64 * full_step_seconds("conv4_2", 128) * pixel_share("fourier", 64))
    assert est(method="seed") > est() and est(speed=2.0) == pytest.approx(est() / 2)
    layers = list(STEP_SECONDS_128)
    flops = [forward_flops(name, 128, 1) for name in layers]
    cost = [full_step_seconds(name, 128) for name in layers]
    for i in range(len(layers) - 1):  # the cut network only grows: a deeper layer is never cheaper to render
        assert flops[i + 1] >= flops[i] and cost[i + 1] >= cost[i] * 0.85, (layers[i], layers[i + 1])
    assert cost[-1] / cost[0] > 10  # conv5_3 does ~60x conv1_1's FLOPs: the table must see most of it


def test_largest_fits_are_the_edges_of_the_budget():
    s = make_settings("conv4_3", "fourier", size=384, steps=5000)
    steps = largest_steps(s, 60.0)
    assert estimate_seconds(make_settings("conv4_3", "fourier", size=384, steps=steps)) <= 60
    assert estimate_seconds(make_settings("conv4_3", "fourier", size=384, steps=steps + 1)) > 60
    size = largest_size(make_settings("conv4_3", "fourier", size=1024, steps=128), 60.0)
    assert size % 16 == 0 and estimate_seconds(make_settings("conv4_3", "fourier", size=size, steps=128)) <= 60
    assert estimate_seconds(make_settings("conv4_3", "fourier", size=size + 16, steps=128)) > 60


def test_size_cap_follows_the_memory_and_the_slots():
    assert max_size(2.5, 1) > max_size(2.5, 2) > max_size(1.5, 2) >= 16
    assert max_size(8, 1) > 1024  # a roomy server is limited by the engine's own maximum instead
    assert pixel_share("seed", 128) == 1.0 and 0.3 < pixel_share("fourier", 128) < 0.4
