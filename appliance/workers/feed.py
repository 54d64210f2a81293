"""Feed worker: writes ticks from the configured source into the TickRing.

Synthetic ticks are generated straight into the ring's slots (claim, fill, publish): no
intermediate array. ``feed.rate`` paces the writer (0: as fast as it can go). A restarted
feed continues the ring's sequence numbers, so readers see one stream.
"""

from __future__ import annotations

import logging
import time

from appliance.feeds.replay import ReplayFeed
from appliance.feeds.synthetic import SyntheticFeed
from appliance.layout import TICKS
from appliance.records import TICK
from appliance.shm import TickRing
from appliance.workers.base import Worker

log = logging.getLogger(__name__)


class Pacer:
    """Spreads ``rate`` records per second over time; 0 means unpaced.

    Records go out in batches of at least half a millisecond's worth (or a whole batch):
    sleeping for every few records would cost more in timer slack than it paces.
    """

    MIN_SPAN_S = 0.0005
    MAX_SLEEP_S = 0.005

    def __init__(self, rate: float) -> None:
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self._t0 = time.monotonic()
        self._sent = 0

    def allowance(self, batch: int) -> int:
        """How many records may go now (sleeps briefly when too few may)."""
        if self.rate <= 0:
            return batch
        due = int((time.monotonic() - self._t0) * self.rate) - self._sent
        enough = min(batch, max(1, int(self.rate * self.MIN_SPAN_S)))
        if due < enough:
            time.sleep(min(self.MAX_SLEEP_S, (enough - due) / self.rate))
            return 0
        return min(batch, due)

    def sent(self, n: int) -> None:
        self._sent += n


def main(w: Worker) -> None:
    cfg = w.config
    ring = TickRing.attach(cfg.instance, TICKS, TICK, cfg.ring_capacity)
    writer = ring.writer(w.strategy, seq_field="seq")
    out = w.c["ticks_out"]
    pacer = Pacer(cfg.feed.rate)
    try:
        if cfg.feed.kind == "replay":
            _replay(w, writer, out)
        else:
            feed = SyntheticFeed.from_config(cfg)
            if w.spec.incarnation > 1:
                feed.resume(ring.records, ring.publish_cursor)
            _synthetic(w, writer, feed, pacer, out)
    finally:
        writer.close()
        ring.close()


def _synthetic(w: Worker, writer, feed: SyntheticFeed, pacer: Pacer, out: int) -> None:
    batch = w.config.feed.batch_size
    w.event("ready")
    while not w.stopping:
        if w.tick():
            for msg in w.take_messages():
                if msg["kind"] == "reload":
                    pacer.set_rate(msg["config"]["feed"]["rate"])
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
    feed = ReplayFeed.from_config(w.config)
    w.event("ready")
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
