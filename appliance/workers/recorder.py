"""Recorder worker: writes every tick it reads from the ring to history on disk.

``recorder.format = "parquet"`` (the default) writes the history folder users open with
pandas, polars or DuckDB and the replay feed and backtests read (feeds/parquet.py); the
conversion and compression run on a writer thread, so this loop only copies batches out of
the ring. ``"tickfile"`` appends the raw records to one file. A lapped batch is not written
(it may be half overwritten): the loss is counted in the stats and the ring's reader slot,
and the Parquet files' metadata record the seq range that is missing.
"""

from __future__ import annotations

import logging

from appliance.config import Config
from appliance.feeds.parquet import ParquetRecorder
from appliance.feeds.tickfile import TickFileWriter
from appliance.model.records import TICK
from appliance.runtime import layout
from appliance.runtime.messages import Ready
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing

log = logging.getLogger(__name__)

READ_BATCH = 8192
WAIT_S = 0.05


def _writer(cfg: Config) -> ParquetRecorder | TickFileWriter:
    r = cfg.recorder
    if r.format == "tickfile":
        return TickFileWriter(r.path, cfg.symbol_names)
    feed = {"kind": cfg.feed.kind, "instance": cfg.instance}
    if cfg.feed.kind == "replay":
        feed["path"] = str(cfg.feed.path)
    else:
        feed["seed"] = cfg.feed.seed
    return ParquetRecorder(
        r.path,
        cfg.universe().instruments,
        feed,
        rotate_bytes=int(r.rotate_mb * (1 << 20)),
        rotate_s=r.rotate_s,
    )


def main(w: Worker) -> None:
    cfg = w.config
    ring = BroadcastRing.attach(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity)
    reader = ring.reader(w.strategy, start="latest", slot=layout.RECORDER_READER)
    writer = _writer(cfg)
    history = isinstance(writer, ParquetRecorder)
    log.info("recording ticks to %s (%s)", cfg.recorder.path, cfg.recorder.format)
    w.send(Ready())
    try:
        while not w.stopping:
            w.tick()
            if not reader.wait(WAIT_S):
                if history:
                    writer.poll()
                continue
            view = reader.read(READ_BATCH)
            batch = view.copy()  # validate before anything reaches the file
            if reader.valid():
                if history:
                    writer.append(batch, copy=False)  # our own copy: no second one
                else:
                    writer.append(batch)
                w.add("ticks_in", len(batch))
            else:
                # The history notes the hole when the next batch's seq does not follow.
                w.add("tick_gaps", len(batch))
    finally:
        writer.close()
        reader.close()
        ring.close()
