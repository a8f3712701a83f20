"""The Ray tests' cluster, one per test file. The parallel run keeps both Ray files on one worker, one after the
other (tests/conftest.py): two clusters side by side, one per file and worker, made the parallel step slower
(10:08 against 9:47), each cluster's own processes competing for the two cores."""

import os

import pytest


@pytest.fixture(scope="module")
def local_cluster():
    """A local 2-CPU Ray cluster (Ray is imported only by a test that asks for it)."""
    from viz.serving import cluster

    os.environ.pop(cluster.ENV_ADDRESS, None)
    r = cluster.connect("local", num_cpus=2)
    try:
        yield r
    finally:
        cluster.shutdown()
