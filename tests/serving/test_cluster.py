"""Issue 14: the app's job manager on a local 2-worker Ray cluster (the job rules' own tests, live progress, the
Generator and Compare pages), and Ray never imported unless asked for. The batch workloads (precompute, the
examples scan) are tests/serving/test_cluster_runs.py. Select them with ``-m ray``."""

import os
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (requirements-cluster.txt; `make test` installs it)")


from viz.serving import cluster, executor
from viz.serving.jobs import JobManager, get_manager, reset_manager

pytestmark = pytest.mark.ray

def test_nothing_imports_ray_unless_asked(tmp_path):
    code = ("import sys, viz, viz.cli, viz.serving.jobs, viz.atlas.gallery, viz.atlas.examples, viz.serving.cluster\n"
            "import viz.serving.cluster_runs, viz.serving.executor\n"
            "from viz.cli import main\n"
            f"rc = main(['precompute', '--layers', 'conv1_1', '--channels', '0', '--size', '32', '--steps', '2',\n"
            f"           '--retries', '0', '--weights', 'oxford', '--out', {str(tmp_path)!r}])\n"
            "assert rc == 0, rc\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VIZ_RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cli_ray_flags_are_checked_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "viz", "precompute", "--layers", "conv1_1", "--workers", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --workers needs --ray ADDRESS|local"


# ------------------------------------------------------------------------------------------ the app backend
@pytest.fixture(scope="module")
def ray_actors(local_cluster):
    actors = cluster.start_workers(2, "oxford", "cpu", cpus=0.5, max_restarts=-1)  # half the cores: the app's own
    # workers (test_the_app_renders_its_pages_on_ray_when_asked) get the other half
    try:
        yield actors
    finally:
        for a in actors:
            ray.kill(a)


@pytest.fixture
def ray_managers(ray_actors):
    """Like test_jobs' ``managers``, but a :class:`viz.serving.jobs.JobManager` rendering on the module's actors (as many
    actors as the test's ``max_running``)."""
    made = []

    def make(**kw):
        kw.setdefault("disk_cache", None)
        n = kw.pop("max_running", 1)
        m = JobManager(executor=executor.RayJobExecutor(actors=ray_actors[:n], poll=0.05), **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.shutdown()


from tests.serving import test_jobs as J  # noqa: E402  (the job rules' own tests, run against the Ray backend)

JOB_TESTS = [J.test_fifo_queue_positions_and_results, J.test_same_request_is_shared_then_instant,
             J.test_cancel_is_per_visitor_and_the_job_stops_when_nobody_is_left,
             J.test_a_queued_job_nobody_wants_leaves_the_queue, J.test_budget_refuses_up_front_and_names_what_fits,
             J.test_hard_time_limit_stops_a_job_and_keeps_the_image,
             J.test_a_failing_job_reports_one_line_and_the_worker_survives]


@pytest.mark.parametrize("rule", JOB_TESTS, ids=[t.__name__.removeprefix("test_") for t in JOB_TESTS])
def test_job_rules_hold_on_ray(rule, ray_managers, tmp_path):
    import inspect

    args = {"managers": ray_managers, "tmp_path": tmp_path}
    rule(*[args[p] for p in inspect.signature(rule).parameters])


def test_ray_job_manager_shows_live_progress_and_previews(ray_managers):
    m = ray_managers(max_running=2)
    a = m.submit(J.s(3000, layer="conv3_1"), 0, "cpu")
    b = m.submit(J.s(3000, layer="conv3_1"), 1, "cpu")
    J.until(lambda: a.step >= 8 and b.step >= 8 and a.preview is not None and b.preview is not None,
            what="both jobs to run at once, with previews")
    assert m.stats()["running"] == 2 and len(a.history) >= 8 and a.eta is not None
    m.cancel(a)
    m.cancel(b)
    for j in (a, b):
        J.wait(j, 60)
        assert j.state == "cancelled" and j.image is not None and j.step < 3000


@pytest.fixture
def app_on_ray(local_cluster, monkeypatch):
    monkeypatch.setenv("VIZ_RAY_ADDRESS", "local")  # joins the running cluster
    monkeypatch.setenv("VIZ_RAY_WORKERS", "2")
    monkeypatch.setenv("VIZ_RAY_CPUS", "0.5")
    reset_manager()
    # the app's own manager, built here: its workers start under start_workers' deadline, not under AppTest's
    # for one script run (on a busy machine two workers loading the model took longer than its 120 s then)
    from app_pages._server import manager

    manager()
    yield
    reset_manager()


def test_the_app_renders_its_pages_on_ray_when_asked(app_on_ray, tiny_gallery):
    """One manager, built from the app's VIZ_RAY_* variables (its two workers start once): the Generator and Compare
    pages' own tests pass on it."""
    from tests.dashboard import test_app

    m = get_manager()
    assert isinstance(m.executor, executor.RayJobExecutor) and m.limits.max_running == 2
    test_app.test_generator_runs_and_shows_result(tiny_gallery)
    test_app.test_compare_renders_both_methods(tiny_gallery)
    assert get_manager() is m  # the pages rendered on it, not on a manager of their own

