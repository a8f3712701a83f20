"""Issue 14: the three workloads on a local 2-worker Ray cluster give what they give in one process.

Precompute (same images and records, a worker killed mid-batch), the examples scan as a Ray Data pipeline (same
top lists, maxima and percentiles), the app's job manager on Ray actors (the job rules' own tests, the generator
and compare pages), and Ray never imported unless asked for. Select them with ``-m ray``."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (requirements-cluster.txt; `make test` installs it)")


from viz import make_settings, render
from viz.atlas.examples import examples_dir, scan
from viz.atlas.precompute import precompute
from viz.atlas.records import LayerDir, config_name, load_valid_record, validate_manifest
from viz.base.corpus import bundled
from viz.serving import cluster, cluster_runs, executor
from viz.serving.jobs import JobManager, get_manager, reset_manager

pytestmark = pytest.mark.ray

VOLATILE = ("seconds", "created")  # a record's wall time and date differ between any two runs


@pytest.fixture(scope="module")
def local_cluster():
    os.environ.pop(cluster.ENV_ADDRESS, None)
    r = cluster.connect("local", num_cpus=2)
    try:
        yield r
    finally:
        cluster.shutdown()


def gallery_state(root, s, layers):
    """Per channel: the image's sha256 and the record without its wall time and date."""
    out = {}
    for layer, chans in layers.items():
        d = LayerDir(root, s.weights, config_name(s), layer)
        manifest = validate_manifest(json.loads(d.manifest.read_text()))
        assert sorted(map(int, manifest["channels"])) == sorted(chans)
        for ch in chans:
            rec = load_valid_record(d, ch, replace(s, layer=layer).to_dict())
            assert rec is not None, (layer, ch)
            out[(layer, ch)] = (hashlib.sha256(d.image(ch).read_bytes()).hexdigest(),
                                {k: v for k, v in rec.items() if k not in VOLATILE})
    return out


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


def test_precompute_on_two_workers_matches_one_process(tmp_path, local_cluster):
    s = make_settings("conv1_1", "fourier", size=32, steps=6)
    layers = {"conv1_1": [0, 1, 2, 3, 4, 5], "conv2_1": [7, 9]}
    local = precompute(tmp_path / "local", s, layers, batch=2, device="cpu", retries=0)
    seen = []
    rep = cluster_runs.precompute("local", tmp_path / "ray", s, layers, batch=2, device="cpu", retries=0, workers=2,
                             events=lambda kind, info: seen.append((kind, info["pid"])))
    assert rep.rendered == local.rendered == 8 and rep.workers == 2 and rep.lost_workers == 0
    assert len({pid for kind, pid in seen if kind == "done"}) == 2  # both workers rendered
    assert gallery_state(tmp_path / "ray", s, layers) == gallery_state(tmp_path / "local", s, layers)
    again = cluster_runs.precompute("local", tmp_path / "ray", s, layers, batch=2, device="cpu", retries=0, workers=2)
    assert again.rendered == 0 and again.skipped == 8  # resumable: the same files, nothing left to do


def test_a_worker_killed_mid_batch_loses_only_its_batch(tmp_path, local_cluster):
    s = make_settings("conv3_1", "fourier", size=32, steps=40)
    layers = {"conv3_1": list(range(8))}
    inflight: dict[int, list] = {}
    killed: list = []

    def events(kind, info):
        if kind == "dispatch":
            inflight[info["pid"]] = info["channels"]
        elif kind == "done":
            inflight.pop(info["pid"], None)
            if not killed and inflight:  # the other worker is in the middle of a batch: kill it
                pid, chans = next(iter(inflight.items()))
                killed.append((pid, chans))
                os.kill(pid, signal.SIGKILL)

    rep = cluster_runs.precompute("local", tmp_path, s, layers, batch=2, device="cpu", retries=0, workers=2,
                             events=events)
    assert killed and rep.lost_workers == 1 and rep.requeued == 1
    assert rep.rendered == 8 and not rep.cancelled
    state = gallery_state(tmp_path, s, layers)
    lost = killed[0][1]
    again = render(s, lost, "cpu")  # the lost batch, rendered again by the survivor, is the batch itself
    for i, ch in enumerate(lost):
        assert state[("conv3_1", ch)][1]["final_activation"] == pytest.approx(float(again.final_activation[i]),
                                                                               abs=1e-4)


def same_examples(one: list[dict], other: list[dict]) -> bool:
    """The same activations in the same order, and the same photo positions for each of them, except among
    positions tied at exactly the list's last value (which of equal values make the cut is arbitrary; some
    saturated conv1_1 channels have dozens of exactly equal responses in one photo)."""
    if [e["activation"] for e in one] != [e["activation"] for e in other]:
        return False
    last = one[-1]["activation"] if one else None
    key = lambda e: (e["activation"], e["image"], e["scale"], e["box"])  # noqa: E731
    return sorted(map(key, (e for e in one if e["activation"] != last))) == \
        sorted(map(key, (e for e in other if e["activation"] != last)))


def test_examples_scan_as_ray_data_matches_one_process(tmp_path, local_cluster, model):
    layers = ["conv1_1", "conv5_3"]  # the first layer and the whole network
    corpus = replace(bundled(), images=bundled().images[:5])  # 5 of the 11 photos, one block each, 2 workers
    one = scan(model, corpus, tmp_path / "one", layers)
    two = cluster_runs.scan("local", "oxford", corpus, tmp_path / "ray", layers, workers=2)
    assert two.images == one.images == 5 and two.skipped == one.skipped == {}
    a, b = examples_dir(tmp_path / "one", "oxford", "bundled"), examples_dir(tmp_path / "ray", "oxford", "bundled")
    for layer in layers:
        x, y = json.loads((a / f"{layer}.json").read_text()), json.loads((b / f"{layer}.json").read_text())
        assert {k: v for k, v in x.items() if k != "channels"} == {k: v for k, v in y.items() if k != "channels"}
        for cx, cy in zip(x["channels"], y["channels"], strict=True):
            assert (cx["max"], cx["p99"], cx["p999"]) == (cy["max"], cy["p99"], cy["p999"])  # exactly
            for end in ("top", "bottom"):
                assert same_examples(cx[end], cy[end]), (layer, end, cx[end], cy[end])
    ca, cb = json.loads((a / "corpus.json").read_text()), json.loads((b / "corpus.json").read_text())
    assert {k: v for k, v in ca.items() if k != "seconds"} == {k: v for k, v in cb.items() if k != "seconds"}
    assert not (b / ".scan-state.pt").exists()


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

