import time

import numpy as np
import pytest

from viz import VizError, make_settings
from viz.jobs import JobManager, wait


def s(channel_steps=6, layer="conv1_1", **kw):
    return make_settings(layer, "fourier", size=32, steps=channel_steps, **kw)


def test_fifo_queue_positions_and_results(tmp_path):
    m = JobManager(max_running=1, max_queued=8, disk_cache=tmp_path)
    long = m.submit(s(2000, layer="conv3_1"), 0, "cpu")  # long enough to still run while we look
    short = [m.submit(s(40), c, "cpu") for c in (1, 2)]
    while long.state != "running":
        time.sleep(0.01)
    assert [m.position(j) for j in (long, *short)] == [0, 1, 2]  # one runs, two wait in order
    assert m.stats()["running"] == 1 and m.stats()["queued"] == 2
    m.cancel(long)
    while not short[1].finished:  # FIFO with one slot: the second starts only once the first is over
        second_state = short[1].state
        assert second_state == "queued" or short[0].finished
        time.sleep(0.005)
    for j in short:
        wait(j, 120)
    assert long.state == "cancelled"
    assert all(j.state == "done" and j.image.shape == (32, 32, 3) and len(j.history) == 40 for j in short)


def test_same_request_is_shared_then_instant(tmp_path):
    m = JobManager(disk_cache=tmp_path)
    a = m.submit(s(), 3, "cpu")
    assert m.submit(s(), 3, "cpu") is a  # a second session asking the same thing joins the same job
    wait(a, 60)
    again = m.submit(s(), 3, "cpu")
    assert again.state == "done" and np.array_equal(again.image, a.image) and m.get(again.id) is again
    restarted = JobManager(disk_cache=tmp_path)
    fresh = restarted.submit(s(), 3, "cpu")  # after a restart: from disk
    assert fresh.state == "done" and fresh.cached and np.array_equal(fresh.image, a.image)
    assert restarted.get(fresh.id) is fresh  # pages look jobs up by id
    assert fresh.history == pytest.approx(a.history)


def test_cancel_running_keeps_partial_and_cancel_queued_never_runs(tmp_path):
    m = JobManager(max_running=1, disk_cache=tmp_path)
    running = m.submit(s(400, layer="conv3_1"), 0, "cpu")
    queued = m.submit(s(400, layer="conv3_1"), 1, "cpu")
    while running.step < 3:
        time.sleep(0.01)
    m.cancel(queued)
    m.cancel(running)
    wait(running, 60)
    assert running.state == "cancelled" and 3 <= running.step < 400 and running.image is not None
    assert queued.state == "cancelled" and queued.step == 0
    # a cancelled result is not cached as if complete
    assert m.submit(s(400, layer="conv3_1"), 0, "cpu") is not running
    m.cancel(m.submit(s(400, layer="conv3_1"), 0, "cpu"))


def test_queue_limit_refuses_with_one_line(tmp_path):
    m = JobManager(max_running=1, max_queued=1, disk_cache=tmp_path)
    first = m.submit(s(300, layer="conv3_1"), 0, "cpu")
    while first.state != "running":
        time.sleep(0.01)
    second = m.submit(s(300, layer="conv3_1"), 1, "cpu")
    with pytest.raises(VizError, match="busy"):
        m.submit(s(300, layer="conv3_1"), 2, "cpu")
    m.cancel(second)
    m.cancel(first)
    wait(first, 60)


def test_a_failing_job_reports_one_line_and_the_worker_survives(tmp_path):
    m = JobManager(disk_cache=tmp_path)
    bad = m.submit(make_settings("conv1_1", size=32, steps=2, weights=str(tmp_path / "gone.pt")), 0, "cpu")
    wait(bad, 60)
    assert bad.state == "error" and "not found" in bad.error and "\n" not in bad.error
    good = wait(m.submit(s(), 0, "cpu"), 60)
    assert good.state == "done"


def test_result_cache_is_bounded(tmp_path):
    m = JobManager(cache_size=2, disk_cache=None)
    for c in range(4):
        wait(m.submit(s(2), c, "cpu"), 60)
    assert m.stats()["cached"] == 2
