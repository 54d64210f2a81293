"""Recorder worker: appends every tick it reads from the ring to a tick file.

The file is what the replay feed plays back. A lapped batch is not written (it may be
half overwritten); the loss is counted in the stats and the ring's reader slot.
"""

from __future__ import annotations

import logging

from appliance.feeds.tickfile import TickFileWriter
from appliance.model.records import TICK
from appliance.runtime import layout
from appliance.runtime.messages import Ready
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing

log = logging.getLogger(__name__)

READ_BATCH = 8192
WAIT_S = 0.05


def main(w: Worker) -> None:
    cfg = w.config
    ring = BroadcastRing.attach(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity)
    reader = ring.reader(w.strategy, start="latest", slot=layout.RECORDER_READER)
    writer = TickFileWriter(cfg.recorder.path, cfg.symbol_names)
    log.info("recording ticks to %s", cfg.recorder.path)
    w.send(Ready())
    try:
        while not w.stopping:
            w.tick()
            if not reader.wait(WAIT_S):
                continue
            view = reader.read(READ_BATCH)
            batch = view.copy()  # validate before anything reaches the file
            if reader.valid():
                writer.append(batch)
                w.add("ticks_in", len(batch))
            else:
                w.add("tick_gaps", len(batch))
    finally:
        writer.close()
        reader.close()
        ring.close()
