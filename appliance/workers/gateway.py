"""Gateway worker: remote agent hosts' side of the execution instance's queues.

For each agent host another instance runs, the execution instance holds that host's
queues and positions snapshot as for a local one; the gateway stands where the host would:

- intake: it reads ``<prefix>.intents.<host>`` through a durable consumer and pushes each
  run into the host's intent queue with ``seq`` = the intent's exec id (its place in the
  stream, see appliance/cluster/order_wire.py). Execution takes them like any intents,
  journals them and only then releases them from the queue; the gateway acknowledges a
  run to JetStream once execution has taken all of it (and published what it did). Where
  to start is the gateway's own knowledge, never the consumer's: after the highest exec id
  in the journal (any run, any epoch) and in the queue, so an intent journaled before a
  crash of either instance is not handed over again.
- reports: it forwards the host's report queue to ``<prefix>.reports.<host>.events`` and
  the host's positions to ``.reset`` (at start, when execution bumps the snapshot epoch,
  and every ``cluster.reset_interval_s``), exactly as a local host would read them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from appliance.cluster.client import StreamReader, SubjectChain, ack, ensure_stream, retrying
from appliance.cluster.order_wire import (
    EVENTS,
    FIRST_PART,
    RESET,
    decode_intents,
    events_headers,
    exec_ids,
    reset_messages,
    run_of,
)
from appliance.cluster.wire import WireError
from appliance.runtime.messages import Ready
from appliance.runtime.positions import TAG_EPOCH, TAG_INTENTS_TAIL, TAG_REPORTS_HEAD
from appliance.runtime.worker import Worker
from appliance.trading.journal import Journal
from appliance.workers import netio
from appliance.workers.segments import HostSegments

log = logging.getLogger(__name__)

MAX_MSGS = 64
FETCH_WAIT_S = 0.02
IDLE_S = 0.001
REPORT_BATCH = 4096
ACK_WAIT_S = 60.0
CHECKPOINT_TRIES = 5
# A periodic reset that cannot be a checkpoint (reports kept coming) waits this long and
# tries again, up to POSTPONE_MAX times: an inexact one skips reports, so the host reloads
# (market makers requote), which a steady flow of reports must not cause every interval.
POSTPONE_S = 0.5
POSTPONE_MAX = 60


class HostGateway:
    """One remote host: its queues on this instance, its subjects on the cluster."""

    def __init__(self, w: Worker, js: JetStreamContext, h: int) -> None:
        cfg = w.config
        self.w, self.h = w, h
        self.name = cfg.hosts[h].name
        self.segments = HostSegments.attach(cfg, h)
        self.intents_q, self.reports_q = self.segments.intents_q, self.segments.reports_q
        self.snapshot = self.segments.snapshot
        self.producer = self.intents_q.producer(w.strategy)  # seq = exec id, not stamped
        self.consumer = self.reports_q.consumer(w.strategy)
        self.layout = netio.host_layout(cfg, h)
        self.epoch = netio.epoch(w)
        sub, specs = netio.subjects(cfg), netio.streams(cfg)
        self.reader = StreamReader(
            js, specs["intents"].name, sub.intents(self.name), f"{sub.prefix}-exec-{self.name}",
            ACK_WAIT_S,
        )  # fmt: skip
        go = netio.keep_going(w)
        reports = specs["reports"].name
        self.events = SubjectChain(js, reports, sub.reports(self.name, EVENTS), go)
        self.resets = SubjectChain(js, reports, sub.reports(self.name, RESET), go)
        self.cursor = -1  # highest exec id handed to execution (or journaled)
        self.pending: tuple[np.ndarray, Msg] | None = None  # a run the queue had no room for
        # (queue position after a run, its last exec id, its message): acked once taken.
        self.runs: deque[tuple[int, int, Msg | None]] = deque()
        self.taken = -1  # watermark announced to the host
        self.skip_before = 0
        self.snap_epoch = -1
        self.next_reset = 0.0
        self.postponed = 0  # periodic resets put off in a row (see POSTPONE_S)

    def _record_seq(self, pos: int) -> int:
        """Exec id of the record this gateway pushed at queue position ``pos``."""
        return int(self.intents_q.records[pos & self.intents_q.mask]["seq"])

    async def start(self, journaled: int) -> None:
        q = self.intents_q
        head, tail = q.head, q.tail
        self.cursor = max(journaled, self._record_seq(head - 1) if head else -1)
        if head > tail:  # pushed by an earlier incarnation, not taken yet
            self.runs.append((head, self._record_seq(head - 1), None))
        t = self.snapshot.tag(TAG_INTENTS_TAIL)
        # Taken so far: the last intent execution took in this queue lifetime, or, before
        # any, what the journal holds (loaded into the positions when execution started).
        self.taken = self._record_seq(t - 1) if t > 0 and head - t < q.capacity else journaled
        for chain in (self.events, self.resets):
            await chain.sync()
        start = run_of(self.cursor) if self.cursor >= 0 else 1
        stream = self.reader.stream
        go = netio.keep_going(self.w)
        info = await retrying(lambda: self.reader.js.stream_info(stream), go, stream)
        if self.cursor >= 0 and info.state.last_seq < start:
            raise RuntimeError(
                f"{self.name}: the journal has intents up to stream sequence {start} but stream "
                f"{self.reader.stream} ends at {info.state.last_seq}: it was re-created; "
                "journaled intents would be taken for new ones (start a new journal)"
            )
        await self.reader.open(start)
        await self.reset(checkpoint=False)
        log.info("%s: intents from stream sequence %d (exec ids after %d)",
                 self.name, start, self.cursor)  # fmt: skip

    # -- intake ------------------------------------------------------------------------

    async def intake(self) -> int:
        """Hand the next runs to execution's queue; how many intents (0: nothing to do)."""
        if self.pending is not None:
            return self._push(*self.pending)
        pushed = 0
        for msg in await self.reader.fetch(MAX_MSGS, FETCH_WAIT_S):
            seq = msg.metadata.sequence.stream
            self.w.slot.set(self.w.c["net_seq"], seq)
            self.w.slot.set(self.w.c["net_lag"], msg.metadata.num_pending)
            try:
                run = decode_intents(msg.data, msg.headers, self.layout, self.h, self.name)
            except WireError as exc:
                log.error("%s: refusing stream message %d: %s", self.name, seq, exc)
                self.w.add("errors")
                await msg.term()
                continue
            rows = run.rows
            rows["seq"] = exec_ids(seq, len(rows))
            fresh = rows[rows["seq"].astype(np.int64) > self.cursor]
            self.w.add("duplicates", len(rows) - len(fresh))
            if len(fresh) == 0:
                await ack(msg)
                continue
            self.cursor = int(fresh["seq"][-1])
            pushed += self._push(fresh, msg)
            if self.pending is not None:
                break  # the queue is full: execution is behind; fetch no more
        return pushed

    def _push(self, rows: np.ndarray, msg: Msg) -> int:
        n = self.producer.push(rows)
        self.pending = (rows[n:], msg) if n < len(rows) else None
        if self.pending is None:
            self.runs.append((self.intents_q.head, int(rows["seq"][-1]), msg))
        self.w.add("intents", n)
        return n

    # -- reports and positions out -----------------------------------------------------

    async def forward(self) -> int:
        """Forward new reports (and a reset when due); how many records were read."""
        if self.snapshot.tag(TAG_EPOCH) != self.snap_epoch:
            await self.reset(checkpoint=False)  # execution says: reload, skip what is queued
            return 1
        if time.monotonic() >= self.next_reset:
            await self.reset(checkpoint=True)
            return 1
        return await self._forward()

    async def _forward(self, until: int | None = None) -> int:
        """Forward the next reports of the queue (before position ``until`` if given)."""
        snap = self.snapshot
        t = snap.tag(TAG_INTENTS_TAIL)
        q = snap.tag(TAG_REPORTS_HEAD)  # read after t: covers every report of what t says
        tail = self.reports_q.tail
        view = self.consumer.peek(REPORT_BATCH if until is None else until - tail)
        n = len(view)
        rows = view[view["seq"] >= self.skip_before].copy()
        after = tail + n
        taken = await self._taken(t) if after >= q else self.taken
        if len(rows) or taken > self.taken:
            first = int(rows["seq"][0]) if len(rows) else after
            headers = events_headers(
                self.w.config.instance, self.epoch, first, len(rows), taken, self.name
            )
            await self.events.append(rows.tobytes(), headers)
            self.taken = taken
            self.w.add("reports", len(rows))
        self.consumer.advance(n)
        return n

    async def _taken(self, t: int) -> int:
        """Acknowledge the runs execution has taken up to queue position ``t``; the highest
        exec id taken."""
        taken = self.taken
        while self.runs and self.runs[0][0] <= t:
            _, last, msg = self.runs.popleft()
            taken = max(taken, last)
            if msg is not None:
                await ack(msg)
        return taken

    async def _snapshot(self, checkpoint: bool) -> tuple[np.ndarray, list[int], bool]:
        """(positions, tags, is a checkpoint): every report forwarded so far is in the
        positions; in a checkpoint no other report is (everything they include was
        forwarded first), which the flow of reports may not allow within a few tries."""
        for _ in range(CHECKPOINT_TRIES if checkpoint else 0):
            if self.snapshot.tag(TAG_EPOCH) != self.snap_epoch:
                break  # execution restarted meanwhile: its queued reports are in the positions
            await self._forward_all()
            data, tags, _ = self.snapshot.read()
            if tags[TAG_EPOCH] == self.snap_epoch and tags[TAG_REPORTS_HEAD] == self.reports_q.tail:
                return data, tags, True
        while True:
            data, tags, _ = self.snapshot.read()
            if tags[TAG_REPORTS_HEAD] >= self.reports_q.tail:
                return data, tags, False
            await asyncio.sleep(0.001)  # execution publishes right after it pushes

    async def _forward_all(self) -> None:
        head = self.snapshot.tag(TAG_REPORTS_HEAD)
        while self.reports_q.tail < head:
            await self._forward(head)

    async def reset(self, checkpoint: bool) -> None:
        """Send the host's positions in full. A checkpoint first forwards what they
        include, so the host's positions already equal them; after execution bumped the
        snapshot epoch, reports still queued are in the positions and are skipped."""
        data, tags, exact = await self._snapshot(checkpoint)
        inexact = checkpoint and not exact and tags[TAG_EPOCH] == self.snap_epoch
        if inexact and self.postponed < POSTPONE_MAX:
            self.postponed += 1
            self.next_reset = time.monotonic() + POSTPONE_S
            return
        self.postponed = 0
        taken = max(self.taken, await self._taken(tags[TAG_INTENTS_TAIL]))
        head = tags[TAG_REPORTS_HEAD]
        parts = reset_messages(
            self.w.config.instance, self.epoch, head, taken, data, self.name, exact
        )
        first = None
        for payload, headers in parts:
            if first is not None:
                headers[FIRST_PART] = str(first)
            seq = await self.resets.append(payload, headers)
            first = seq if first is None else first
        self.skip_before, self.taken = head, taken
        if tags[TAG_EPOCH] != self.snap_epoch:
            log.info("%s: positions sent (snapshot epoch %d, reports from %d)",
                     self.name, tags[TAG_EPOCH], head)  # fmt: skip
        self.snap_epoch = tags[TAG_EPOCH]
        self.next_reset = time.monotonic() + self.w.config.cluster.reset_interval_s

    def close(self) -> None:
        self.producer.close()
        self.consumer.close()
        self.segments.close()


def main(w: Worker) -> None:
    netio.run(w, _gateway)


async def _execution_ready(w: Worker, gates: list[HostGateway]) -> bool:
    """Wait until execution has recovered and published every remote host's positions."""
    while any(g.snapshot.tag(TAG_EPOCH) < 1 for g in gates):
        if w.stopping:
            return False
        await asyncio.sleep(0.02)
    return True


async def _loop(step, idle: float) -> None:
    while True:
        if not await step():
            await asyncio.sleep(idle)


async def _gateway(w: Worker, js: JetStreamContext) -> None:
    cfg = w.config
    specs = netio.streams(cfg)
    for name in ("intents", "reports"):
        await ensure_stream(js, specs[name])
    gates = [HostGateway(w, js, h) for h in cfg.remote_hosts()]
    tasks: list[asyncio.Task] = []
    try:
        if not await _execution_ready(w, gates):
            return
        journal = Journal(cfg.journal_path, readonly=True)
        try:
            journaled = journal.reads.highest_intent_seqs()
        finally:
            journal.close()
        for g in gates:
            await g.start(journaled.get(g.h, -1))
        w.send(Ready())
        for g in gates:
            tasks.append(asyncio.create_task(_loop(g.intake, IDLE_S)))
            tasks.append(asyncio.create_task(_loop(g.forward, IDLE_S)))
        while not w.stopping:
            await asyncio.sleep(0.02)
            for t in tasks:
                if t.done():
                    t.result()  # a failed loop fails the worker (the supervisor restarts it)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in gates:
            g.close()
