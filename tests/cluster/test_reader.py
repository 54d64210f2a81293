"""StreamReader against a real server that goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib

import nats

from appliance.cluster.client import GONE, TRANSIENT, StreamReader


async def _publish(js, subject: str, data: bytes) -> None:
    """Publish, retried while the client reconnects to a restarted server."""
    for _ in range(100):
        with contextlib.suppress(*TRANSIENT, *GONE):
            await js.publish(subject, data)
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the restarted server never took a publish")


def test_a_reader_whose_consumer_could_not_be_recreated_tries_again(nats_server):
    """A re-creation that failed while the server was down leaves the reader without a
    consumer: its next fetches try again instead of failing the worker."""

    async def scenario() -> list[bytes]:
        nc = await nats.connect(
            nats_server.urls, connect_timeout=2, max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
        )  # fmt: skip
        try:
            js = nc.jetstream(timeout=2)
            await js.add_stream(name="R", subjects=["r.>"])
            await _publish(js, "r.x", b"1")
            reader = StreamReader(js, "R", "r.x")
            await reader.open(1)
            assert [m.data for m in await reader.fetch(10, 2.0)] == [b"1"]
            node = nats_server.nodes[0]
            node.kill()
            await reader.close()  # what a re-creation that failed leaves behind
            assert await reader.fetch(10, 0.2) == []  # server down: nothing, no error
            node.start()
            await _publish(js, "r.x", b"2")
            for _ in range(100):
                got = await reader.fetch(10, 0.5)
                if got:
                    return [m.data for m in got]
            return []
        finally:
            await nc.close()

    assert asyncio.run(scenario()) == [b"2"]
