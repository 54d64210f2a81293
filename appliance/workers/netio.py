"""What the cluster workers share: NATS settings from the config, and an asyncio main that
keeps the worker's heartbeat and control going while it waits on the network.

A worker's own loop may wait seconds on JetStream (a node restarting, a leader election);
its heartbeat must not stop meanwhile, or the supervisor would kill it for a stall. So a
small task calls ``Worker.tick`` every TICK_S whatever the main coroutine is waiting for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from appliance.cluster import order_wire
from appliance.cluster.client import connect
from appliance.cluster.wire import StreamSpec, Subjects
from appliance.config import ClusterConfig, Config, StreamConfig
from appliance.runtime.worker import TICK_S, Worker

log = logging.getLogger(__name__)

JS_TIMEOUT_S = 5.0


def cluster(cfg: Config) -> ClusterConfig:
    if cfg.cluster is None:
        raise ValueError("this worker needs the config's [cluster] table")
    return cfg.cluster


def subjects(cfg: Config) -> Subjects:
    return Subjects(cluster(cfg).subject_prefix)


def _spec(s: StreamConfig, subject: str) -> StreamSpec:
    return StreamSpec(s.stream, (subject,), s.max_age_s, s.max_bytes, s.replicas)


def streams(cfg: Config) -> dict[str, StreamSpec]:
    """The cluster's three streams: ticks, intents, reports (each one subject tree)."""
    c, sub = cluster(cfg), subjects(cfg)
    return {
        "ticks": _spec(c.ticks, sub.wildcard("ticks")),
        "intents": _spec(c.intents, sub.wildcard("intents")),
        "reports": _spec(c.reports, sub.wildcard("reports")),
    }


def host_layout(cfg: Config, h: int) -> str:
    """What host ``h``'s intents mean, as both ends of the hop must agree on it."""
    u = cfg.universe()
    pops = [(p.kind, p.agents) for p in u.agents.populations if p.host == h]
    return order_wire.host_layout(cfg.hosts[h].name, pops, u.symbols)


def epoch(w: Worker) -> int:
    """The lifetime of this instance's segments (their creation time): queue and ring
    positions are unique within it, and start again after it."""
    return int(w.stats.segment.header["created_ns"])


def keep_going(w: Worker) -> Callable[[], bool]:
    return lambda: not w.stopping


def run(w: Worker, body: Callable[[Worker, JetStreamContext], Awaitable[None]]) -> None:
    """Connect to the cluster and run ``body`` until it returns, with the heartbeat going."""
    asyncio.run(_main(w, body))


async def _main(w: Worker, body: Callable[[Worker, JetStreamContext], Awaitable[None]]) -> None:
    ticker = asyncio.create_task(_tick(w))
    c = cluster(w.config)
    nc = None
    try:
        connecting = asyncio.create_task(
            connect(c.servers, c.credentials, f"{w.config.instance}.{w.process.name}")
        )
        while not connecting.done():
            if w.stopping:
                connecting.cancel()
                return
            await asyncio.sleep(TICK_S)
        nc = connecting.result()
        await body(w, nc.jetstream(timeout=JS_TIMEOUT_S))
    finally:
        ticker.cancel()
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except (TimeoutError, OSError) as exc:  # the server may be gone already
                log.warning("NATS connection did not close cleanly: %s", exc or type(exc))


async def _tick(w: Worker) -> None:
    while not w.stopping:  # once stopping, the worker's own loop ends it
        w.tick()  # a cluster worker subscribes to no message: reloads change nothing it uses
        await asyncio.sleep(TICK_S)
