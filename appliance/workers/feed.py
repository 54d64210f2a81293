"""Feed worker: writes ticks from the configured source into the BroadcastRing.

Synthetic ticks are generated straight into the ring's slots (claim, fill, publish): no
intermediate array. ``feed.rate`` paces the writer (0: as fast as it can go). A restarted
feed continues the ring's sequence numbers, so readers see one stream.
"""

from __future__ import annotations

import asyncio
import logging
import time

from appliance.feeds.pacer import Pacer
from appliance.feeds.synthetic import SyntheticFeed
from appliance.model.records import TICK, TickKind
from appliance.runtime.layout import TICKS
from appliance.runtime.messages import Ready, Reload
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing
from appliance.workers import compose, nats_feed

log = logging.getLogger(__name__)


def main(w: Worker) -> None:
    cfg = w.config
    if cfg.feed.kind == "nats":  # a mirror of another instance's ring (cluster)
        nats_feed.main(w)
        return
    ring = BroadcastRing.attach(cfg.instance, TICKS, TICK, cfg.ring_capacity)
    writer = ring.writer(w.strategy, seq_field="seq")
    out = w.c["ticks_out"]
    pacer = Pacer(cfg.feed.rate)
    try:
        if cfg.feed.kind == "replay":
            _replay(w, writer, out)
        elif cfg.feed.kind == "ccxt":
            asyncio.run(_ccxt(w, writer, out))
        else:
            feed = compose.synthetic_feed(cfg)
            if w.spec.incarnation > 1:
                feed.resume(ring.records, ring.publish_cursor)
            _synthetic(w, writer, feed, pacer, out)
    finally:
        writer.close()
        ring.close()


def _synthetic(w: Worker, writer, feed: SyntheticFeed, pacer: Pacer, out: int) -> None:
    batch = w.config.feed.batch_size
    w.subscribe(Reload)
    w.send(Ready())
    while not w.stopping:
        if w.tick():
            for msg in w.take_messages():
                match msg:
                    case Reload() if w.config.feed.rate != pacer.rate:  # log what changed
                        pacer.set_rate(w.config.feed.rate)
                        log.info("feed rate now %s ticks/s", pacer.rate)
        n = pacer.allowance(batch)
        if n == 0:
            continue
        view = writer.claim(n)
        feed.fill(view, time.time_ns())
        view["recv_ns"] = time.time_ns()  # as written: generation time is not latency
        writer.publish(len(view))
        pacer.sent(len(view))
        w.slot.add(out, len(view))


def _replay(w: Worker, writer, out: int) -> None:
    feed = compose.replay_feed(w.config)
    w.send(Ready())
    for batch in feed:
        if w.stopping:
            return
        w.tick()
        if len(batch) == 0:
            continue
        view = writer.claim(len(batch))
        feed.write(view, batch[: len(view)], time.time_ns())
        writer.publish(len(view))
        w.slot.add(out, len(view))
        rest = batch[len(view) :]
        if len(rest):  # the claim stopped at the ring's end: the rest wraps to its start
            view = writer.claim(len(rest))
            feed.write(view, rest, time.time_ns())
            writer.publish(len(view))
            w.slot.add(out, len(view))
    log.info("replay finished after %d passes", feed.passes + 1)
    while not w.stopping:  # keep the process (and its stats) up until told to stop
        w.tick()
        time.sleep(0.05)


async def _ccxt(w: Worker, writer, out: int) -> None:
    """Live data through ccxt.pro; a restarted feed begins with a GAP for every symbol."""
    feed = compose.ccxt_feed(w.config)
    gaps = w.c["feed_gaps"]
    try:
        await feed.start(gap_first=w.spec.incarnation > 1)
        w.send(Ready())
        async for batch in feed.batches():
            w.tick()
            if w.stopping:
                return
            if len(batch):
                writer.write(batch)
                w.slot.add(out, len(batch))
                w.slot.add(gaps, int((batch["kind"] == TickKind.GAP).sum()))
    finally:
        log.info("ccxt feed: %d gaps, %d reconnects", feed.gaps, feed.reconnects)
        await feed.close()
