"""Every test runs with its own ``VIZ_CACHE_DIR``: nothing reads or writes the user's cache, and no test's render
can be satisfied by a result another test left behind. The oxford weights are converted once per session and
linked into each test's cache (the engine replaces files whole, never in place; a test that changed the linked
files anyway fails, naming them)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Before anything imports viz: module- and session-scoped fixtures (which run before the per-test fixture below)
# and the servers the browser tests start see this session directory, never ~/.cache/vgg16-atlas.
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="viz-test-cache-"))
os.environ["VIZ_CACHE_DIR"] = str(SESSION_CACHE)
WEIGHT_FILES = ("oxford_vgg16_features.pt", "oxford_vgg16_features.json")

from tests.helpers import TINY, serve_gallery  # noqa: E402
from viz.atlas.precompute import precompute
from viz.engine.model import load_model  # noqa: E402
from viz.engine.weights import load_weights  # noqa: E402
from viz.serving.jobs import reset_manager  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _converted_weights():
    load_weights("oxford")  # converted into SESSION_CACHE once
    yield
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def viz_cache(tmp_path, monkeypatch):
    """This test's own cache directory (with a copy of the converted weights); a fresh job manager."""
    cache = tmp_path / "viz-cache"
    cache.mkdir()
    shared = {name: SESSION_CACHE / name for name in WEIGHT_FILES if (SESSION_CACHE / name).is_file()}
    before = {name: _stamp(path) for name, path in shared.items()}
    for name, path in shared.items():
        try:
            os.link(path, cache / name)  # 59 MB: a hard link, not a copy per test
        except OSError:  # another file system
            shutil.copyfile(path, cache / name)
    monkeypatch.setenv("VIZ_CACHE_DIR", str(cache))
    reset_manager()
    yield cache
    reset_manager()
    changed = [name for name, path in shared.items() if _stamp(path) != before[name]]
    assert not changed, f"this test changed the session's shared weight files in place: {changed} (copy them first)"


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@pytest.fixture(scope="session")
def model():
    """The real oxford weights on CPU, as the engine uses them."""
    return load_model("oxford", "cpu", channels_last=True)


@pytest.fixture(scope="session")
def oxford_state_dict(model):
    return model.weights.state_dict


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """A test that changes torch's thread count or grad mode (a job manager splits the cores between its slots)
    does not slow or change the tests after it."""
    threads = torch.get_num_threads()
    yield
    torch.set_grad_enabled(True)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_gallery(tmp_path_factory):
    """Four conv1_1 channels at 32 px, served to the app (``VIZ_GALLERY``) for the module's tests."""
    root = tmp_path_factory.mktemp("gallery")
    precompute(root, TINY, {"conv1_1": [0, 1, 2, 3]}, device="cpu", retries=0)
    yield from serve_gallery(root)


TESTS = Path(__file__).resolve().parent


# `make test` spreads the tests over parallel workers (pytest-xdist, --dist loadgroup): each test on its own, except
# the files whose fixtures are a server or a Ray cluster (GROUPED: a browser file on one worker, so that its server
# starts once; the two Ray files on one worker, one after the other, so that no two clusters compete). Work is
# handed out in this order (longest first, measured in a clean-clone run), so that no long test starts last and
# runs alone at the end; the rest keep their order.
GROUPED = {"browser/": None, "serving/test_cluster": "ray"}  # a file's prefix: its group (None: the file's own)
LONGEST_FIRST = ("browser/test_load.py", "serving/test_budget.py", "serving/test_cluster_runs.py",
                 "browser/test_e2e.py", "serving/test_cluster.py", "browser/test_visitor.py",
                 "serving/test_hostile.py", "browser/test_appearance.py", "atlas/test_examples.py",
                 "bench/test_bench.py", "atlas/test_gallery.py", "serving/test_jobs.py", "dashboard/test_app.py",
                 "atlas/test_factors.py", "engine/test_views.py", "cli/test_cli.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup with the groups of :data:`GROUPED` (by a test file's path). xdist's own groups
    (``xdist_group`` marks) do not hold under pytest 9.2: it tags a test's id through an attribute pytest no longer
    reads, so a grouped file's tests spread over the workers and each worker started the file's server or Ray
    cluster again."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            rel = path.removeprefix("tests/")
            prefix = next((p for p in GROUPED if rel.startswith(p)), None)
            return nodeid if prefix is None else GROUPED[prefix] or path

    return ByFile(config, log)


def pytest_collection_modifyitems(items):
    """The tiers: ``unit`` is marked by hand (no subprocess, no server); everything in tests/browser/ is
    ``browser`` (a real server and Chromium); the rest, unless ``ray``, is ``integration`` (CLI processes, renders,
    Streamlit's AppTest). Then the parallel run's order (:data:`LONGEST_FIRST`)."""
    def where(item) -> str:
        return Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix()

    def rank(item) -> int:
        return LONGEST_FIRST.index(where(item)) if where(item) in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the order is kept
    for item in items:
        if where(item).startswith("browser/"):
            item.add_marker(pytest.mark.browser)
        elif not any(item.get_closest_marker(m) for m in ("unit", "ray", "load")):
            item.add_marker(pytest.mark.integration)
