"""The ``nats`` feed: a mirror of another instance's tick ring, written into this one's.

It reads ``<prefix>.ticks.<cluster.ticks_from>`` in stream order and writes every run
into the local ring as it came, the source's sequence numbers and times included (the
local writer stamps nothing), so this instance's agents see the same ticks as the
source's. Where the numbering shows ticks missing (a subscriber that fell behind the
stream's retention, a bridge that was lapped, a source that restarted) it writes GAP ticks
first, as the ccxt feed does for a lost connection (see cluster/ticks.py), counts them
(``feed_gaps``) and the ticks missing (``net_missing``, exact). ``recv_ns`` stays the
source's: latency measured from it here includes the hop, recorded in the histogram.

The stream sequence of the last message written is kept in the stats slot (``net_seq``,
which outlives the process), so a restarted feed continues after it when the stream still
holds what follows, and otherwise flags the gap.
"""

from __future__ import annotations

import logging
import time

import nats.js.errors
from nats.js import JetStreamContext

from appliance.cluster.client import StreamReader, ensure_stream, retrying
from appliance.cluster.ticks import TickSequencer, decode_ticks, symbols_layout
from appliance.model.records import TICK, TickKind
from appliance.runtime import layout
from appliance.runtime.messages import Ready
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing
from appliance.workers import netio

log = logging.getLogger(__name__)

MAX_MSGS = 64
WAIT_S = 0.05


def main(w: Worker) -> None:
    netio.run(w, _mirror)


async def _run_at(js: JetStreamContext, stream: str, subject: str, seq: int, fp: str, w, nxt):
    """The tick run stored at stream sequence ``seq`` (``nxt``: the first after it on the
    subject), or None when the stream no longer holds it."""

    async def get():
        try:
            if nxt:
                return await js.get_msg(stream, seq, subject=subject, next=True)
            return await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return None

    msg = await retrying(get, netio.keep_going(w), f"message {seq} of {stream}")
    return None if msg is None else (msg.seq, decode_ticks(msg.data, msg.headers, fp))


async def _resume(w: Worker, js, stream: str, subject: str, ring, fp: str):
    """(sequencer, stream sequence to read from) for a restarted feed.

    The ring's newest record is the truth of what was written; the stream message it came
    from names the source's lifetime. That is the message ``net_seq`` names, or the next
    one if the process died between writing it and counting it.
    """
    taken = w.slot.get(w.c["net_seq"])
    pub = ring.publish_cursor
    n = len(w.config.symbols)
    if not taken or not pub:
        return TickSequencer(n), None
    last = int(ring.records[(pub - 1) & ring.mask]["seq"])
    for nxt in (False, True):
        found = await _run_at(js, stream, subject, taken + nxt, fp, w, nxt)
        if found is None:
            break
        seq, run = found
        if run.end - 1 == last:
            return TickSequencer(n, run.epoch, run.end), seq + 1
    log.warning("cannot tell which source lifetime tick %d came from: flagging a gap", last)
    return TickSequencer(n, None, last + 1), taken + 1


async def _mirror(w: Worker, js: JetStreamContext) -> None:
    cfg = w.config
    source = netio.cluster(cfg).ticks_from
    spec = netio.streams(cfg)["ticks"]
    await ensure_stream(js, spec)  # the source may not have created it yet
    ring = BroadcastRing.attach(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity)
    writer = ring.writer(w.strategy)  # no seq stamping: the source's numbering is kept
    subject = netio.subjects(cfg).ticks(source)
    fp = symbols_layout(cfg.symbol_names)
    reader = None
    try:
        sequencer, start = await _resume(w, js, spec.name, subject, ring, fp)
        reader = StreamReader(js, spec.name, subject)
        await reader.open(start)
        log.info("mirroring %s from stream sequence %s", subject, start or "last")
        w.send(Ready())
        c = w.c
        while not w.stopping:
            for msg in await reader.fetch(MAX_MSGS, WAIT_S):
                run = decode_ticks(msg.data, msg.headers, fp)
                now = time.time_ns()
                missing, restarts = sequencer.missing, sequencer.restarts
                rows = sequencer.accept(run, now)
                if len(rows):
                    writer.write(rows)
                if sequencer.restarts > restarts:
                    log.warning(
                        "%s restarted, or its place was lost: a gap of unknown size", source
                    )
                slot = w.slot
                slot.set(c["net_seq"], msg.metadata.sequence.stream)
                slot.set(c["net_lag"], msg.metadata.num_pending)
                slot.add(c["ticks_out"], len(rows))
                slot.add(c["batches"])
                slot.add(c["feed_gaps"], int((rows["kind"] == TickKind.GAP).sum()))
                slot.add(c["net_missing"], sequencer.missing - missing)
                slot.observe_many(now - run.rows["recv_ns"])  # the hop: source ring to ours
    finally:
        if reader is not None:
            await reader.close()
        writer.close()
        ring.close()
