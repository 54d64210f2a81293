"""The nats-server fixtures: real servers from the wheel, JetStream on, loopback only."""

from __future__ import annotations

import asyncio

import nats
import psutil
import pytest

from appliance.cluster.client import DUPLICATE_IN_PROCESS
from appliance.cluster.server import NatsCluster, NatsServerError, free_ports


async def _roundtrip(urls: list[str], replicas: int, subject: str = "probe.x") -> int:
    """Publish one message and read it back; retried while a killed or restarted node's
    streams elect a leader or catch up (JetStream API requests time out meanwhile)."""
    nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=5)
    try:
        js = nc.jetstream(timeout=2)
        for _ in range(15):
            try:
                try:
                    await js.stream_info("PROBE")
                except nats.js.errors.NotFoundError:
                    await js.add_stream(name="PROBE", subjects=["probe.>"], num_replicas=replicas)
                ack = await js.publish(subject, b"payload", headers={"Nats-Msg-Id": subject})
                msg = await js.get_msg("PROBE", ack.seq)
                assert msg.data == b"payload"
                return ack.seq
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                await asyncio.sleep(0.5)
            except nats.js.errors.APIError as exc:
                # the try before this one timed out and is still in process (a leader
                # election after a kill): its msg id makes sending it again safe
                if exc.err_code != DUPLICATE_IN_PROCESS:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("JetStream did not answer")
    finally:
        await nc.close()


def _listening(pid: int) -> list[str]:
    return [
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


def test_single_server_runs_jetstream_on_loopback_in_the_temp_dir(nats_server, tmp_path):
    node = nats_server.nodes[0]
    assert asyncio.run(_roundtrip(nats_server.urls, 1)) == 1
    addrs = _listening(node.proc.pid)
    assert addrs and set(addrs) == {"127.0.0.1"}, addrs
    assert node.store_dir.is_relative_to(tmp_path)
    assert any(node.store_dir.rglob("*.blk")), "JetStream wrote no message block"


def test_three_node_stream_keeps_working_with_a_node_down(nats_cluster):
    assert asyncio.run(_roundtrip(nats_cluster.urls, 3)) == 1
    for node in nats_cluster.nodes:
        assert set(_listening(node.proc.pid)) == {"127.0.0.1"}
    victim = nats_cluster.nodes[0]
    victim.kill()
    assert not victim.alive
    # the two survivors still hold a quorum of the R3 stream
    assert asyncio.run(_roundtrip(nats_cluster.urls[1:], 3, "probe.y")) == 2
    victim.start()  # storage kept: it rejoins and catches up
    assert asyncio.run(_roundtrip([victim.url], 3, "probe.z")) == 3


def test_stop_leaves_no_process_and_a_restart_keeps_the_stream(tmp_path):
    cluster = NatsCluster.create(tmp_path, 1).start()
    pid = cluster.nodes[0].proc.pid
    try:
        asyncio.run(_roundtrip(cluster.urls, 1))
    finally:
        cluster.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    cluster.nodes[0].start()
    try:
        assert asyncio.run(_roundtrip(cluster.urls, 1, "probe.again")) == 2
    finally:
        cluster.stop()


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path):
    taken = NatsCluster.create(tmp_path / "a", 1).start()
    try:
        clash = NatsCluster.create(tmp_path / "b", 1)
        clash.nodes[0].port = taken.nodes[0].port  # the port is in use
        with pytest.raises(NatsServerError, match="exited"):
            clash.start()
    finally:
        taken.stop()


def test_free_ports_are_distinct():
    ports = free_ports(6)
    assert len(set(ports)) == 6
