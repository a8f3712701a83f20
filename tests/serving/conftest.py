"""The Ray tests' cluster: one per test file (module scope), so that the two Ray files, each on its own worker of
the parallel run, run side by side on clusters of their own."""

import os

import pytest


@pytest.fixture(scope="module")
def local_cluster():
    """A local 2-CPU Ray cluster for the module (Ray is imported only by a test that asks for it)."""
    from viz.serving import cluster

    os.environ.pop(cluster.ENV_ADDRESS, None)
    r = cluster.connect("local", num_cpus=2)
    try:
        yield r
    finally:
        cluster.shutdown()
