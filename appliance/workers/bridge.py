"""Bridge worker: market data out. Publishes the tick ring to ``<prefix>.ticks.<instance>``.

It reads the ring from a reader slot of its own, like any reader, and appends each run of
records it read to the subject as one message: the 64-byte TICK rows as they are, with
their ring sequence numbers, so a subscriber knows exactly which ticks it has and which it
missed. A run the writer lapped while it was read is not published (the subscriber sees
the hole in the numbering and flags it). A restarted bridge continues after the last run
the stream holds from this ring, if the ring still has the records after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from nats.js import JetStreamContext

from appliance.cluster.client import SubjectChain, ensure_stream
from appliance.cluster.ticks import MAX_TICKS, symbols_layout, tick_headers
from appliance.cluster.wire import COUNT, EPOCH, SEQ, SOURCE
from appliance.model.records import TICK
from appliance.runtime import layout
from appliance.runtime.messages import Ready
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing
from appliance.workers import netio

log = logging.getLogger(__name__)

WAIT_S = 0.05


def main(w: Worker) -> None:
    netio.run(w, _bridge)


def _resume(last, epoch: int, instance: str, ring: BroadcastRing) -> int | str:
    """Where to start reading: after the stream's last run of this ring, else the oldest."""
    h = (last.headers or {}) if last is not None else {}
    if h.get(SOURCE) != instance or h.get(EPOCH) != str(epoch):
        return "oldest"
    nxt = int(h[SEQ]) + int(h[COUNT])
    if nxt < ring.claim_cursor - ring.capacity:
        log.warning("the ring no longer holds tick %d: subscribers will see a gap", nxt)
        return "oldest"
    return min(nxt, ring.publish_cursor)


async def _bridge(w: Worker, js: JetStreamContext) -> None:
    cfg = w.config
    spec = netio.streams(cfg)["ticks"]
    await ensure_stream(js, spec)
    ring = BroadcastRing.attach(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity)
    epoch = int(ring.segment.header["created_ns"])
    subject = netio.subjects(cfg).ticks(cfg.instance)
    chain = SubjectChain(js, spec.name, subject, netio.keep_going(w))
    start = _resume(await chain.sync(), epoch, cfg.instance, ring)
    reader = ring.reader(w.strategy, start=start, slot=layout.bridge_reader(cfg))
    fp = symbols_layout(cfg.symbol_names)
    net_seq = w.c["net_seq"]
    pool = ThreadPoolExecutor(1, thread_name_prefix="ring-wait")
    loop = asyncio.get_running_loop()
    log.info("publishing ring %s to %s from %s", cfg.instance, subject, start)
    w.send(Ready())
    try:
        while not w.stopping:
            if reader.available() <= 0:
                # The wait blocks (semaphore doorbell), so it runs off the event loop.
                await loop.run_in_executor(pool, reader.wait, WAIT_S)
                continue
            view = reader.read(MAX_TICKS)
            data = view.tobytes()  # the one copy; what was read of the view is used only
            headers = tick_headers(cfg.instance, epoch, view, fp)  # if it proves intact
            written = int(view["recv_ns"][-1])
            if not reader.valid():
                w.add("tick_gaps", len(view))
                continue
            seq = await chain.append(data, headers)
            w.add("ticks_in", len(data) // TICK.itemsize)
            w.add("batches")
            w.slot.set(net_seq, seq)
            w.slot.observe(time.time_ns() - written)  # ring write to stored in the stream
    finally:
        pool.shutdown(wait=True)
        reader.close()
        ring.close()
