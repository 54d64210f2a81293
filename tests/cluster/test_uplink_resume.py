"""The uplink's one delicate moment, made to happen: a run stored in the stream by an
incarnation that died before releasing it from the local queue.

Real segments (the supervisor's own SegmentSet), a real nats-server, the uplink's
own HostUplink; only the dead incarnation is played by the test, which appends the run
exactly as an uplink does. The next incarnation must continue after it: the stream then
holds every queue position once.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np

from appliance.cluster.client import SubjectChain, connect, ensure_stream
from appliance.cluster.order_wire import host_layout, intent_headers, reset_messages
from appliance.config import load_config
from appliance.model.records import INTENT
from appliance.runtime import layout
from appliance.runtime.control import Channel
from appliance.runtime.segments import SegmentSet
from appliance.runtime.worker import Worker, WorkerSpec
from appliance.shm import RecordQueue
from appliance.shm.wait import WaitStrategy
from appliance.workers import netio
from appliance.workers.uplink import HostUplink
from tests.cluster.audit import stream_intents
from tests.cluster.instances import cluster_table
from tests.harness import write_config

PREFIX = "res"


def test_a_run_stored_but_not_released_is_not_published_again(tmp_path, nats_server):
    extra = cluster_table(
        nats_server.urls, PREFIX, role="agents", hosts=["host-b"], ticks_from="src"
    )
    path, _ = write_config(tmp_path, extra=extra, feed_kind="nats")
    cfg = load_config(path)
    segments = SegmentSet(cfg)
    segments.create()
    try:
        queue = RecordQueue.attach(cfg.instance, layout.intents_queue(1), INTENT)
        producer = queue.producer(WaitStrategy.BLOCK, seq_field="seq")  # host-b's side
        rows = np.zeros(10, INTENT)
        rows["host"], rows["qty"], rows["side"] = 1, 0.002, 1
        assert producer.push(rows) == 10
        uplink = next(p for p in layout.processes(cfg) if p.name == "uplink")
        spec = WorkerSpec(uplink, cfg, [0], WaitStrategy.BLOCK, 2, os.getppid())
        w = Worker(spec, Channel("down"), Channel("up"), segments.stats)
        asyncio.run(_resume(w, queue))
        runs = stream_intents(
            nats_server.urls, f"{PREFIX.upper()}_INTENTS", f"{PREFIX}.intents.host-b"
        )
        assert [(int(h["Dm-Seq"]), int(h["Dm-Count"])) for _, h in runs] == [(0, 6), (6, 4)]
        assert queue.tail == 10
        producer.close()
        queue.close()
        w.slot.close()
    finally:
        segments.destroy()


def test_a_reset_that_is_no_checkpoint_reloads_the_host_even_when_positions_agree(tmp_path):
    """After execution's instance restarts, the intents its queue held are journaled stale
    and never reported: their agents wait for a report until the host reloads. The reset
    a new lifetime sends must make it reload although positions agree; a checkpoint (sent
    after every report it includes) need not."""
    extra = cluster_table(
        ["nats://127.0.0.1:4222"], PREFIX, role="agents", hosts=["host-b"], ticks_from="src"
    )  # (no connection is made)
    path, _ = write_config(tmp_path, extra=extra, feed_kind="nats")
    cfg = load_config(path)
    segments = SegmentSet(cfg)
    segments.create()
    try:
        uplink = next(p for p in layout.processes(cfg) if p.name == "uplink")
        spec = WorkerSpec(uplink, cfg, [0], WaitStrategy.BLOCK, 2, os.getppid())
        w = Worker(spec, Channel("down"), Channel("up"), segments.stats)
        up = HostUplink(w, None, 1)
        held = up.link.held.copy()  # what execution will say: the same positions
        epochs = []
        for seq, checkpoint in enumerate((True, False), start=1):
            for payload, headers in reset_messages("exe", 2, 0, 0, held, "host-b", checkpoint):
                up._reset_part(payload, headers, seq)
            epochs.append(up.link.positions.epoch)
        first = epochs[0]
        assert epochs == [first, first + 1]  # only the reload gave the host a new epoch
        up.link.close()
        w.slot.close()
    finally:
        segments.destroy()


async def _resume(w: Worker, queue: RecordQueue) -> None:
    cfg = w.config
    nc = await connect(cfg.cluster.servers, None, "test")
    try:
        js = nc.jetstream(timeout=5)
        specs = netio.streams(cfg)
        for name in ("intents", "reports"):
            await ensure_stream(js, specs[name])
        # The dead incarnation: stored the first six intents, never released them.
        stored = queue.records[:6].copy()
        chain = SubjectChain(js, specs["intents"].name, f"{PREFIX}.intents.host-b", lambda: True)
        await chain.sync()
        layout_fp = host_layout("host-b", [("ema_cross", 40)], cfg.symbol_names)
        await chain.append(
            stored.tobytes(),
            intent_headers(cfg.instance, "host-b", netio.epoch(w), stored, layout_fp),
        )
        up = HostUplink(w, js, 1)
        await up.start()
        while await up.push_intents():
            pass
        await up.close()
    finally:
        await nc.close()
