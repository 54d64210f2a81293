"""Uplink worker: the far end of an agents instance's queues, in place of an execution.

For each agent host this instance runs it plays execution's part on the local side of the
queues (appliance/workers/execution.py's HostLink: intents consumer, reports producer,
positions snapshot through runtime/positions.py's PositionsPublisher), and talks to the
execution instance over JetStream (appliance/cluster/order_wire.py):

- intents: runs of the host's intent queue are appended to ``<prefix>.intents.<host>``;
  a run leaves the local queue only once the stream stored it, so a queued intent
  survives this process and is stored once (the chain resumes after the stream's last
  run of this queue lifetime);
- reports: the host's reports and resets are read from ``<prefix>.reports.<host>.>`` in
  order; reports are pushed to the host and counted into its positions, a reset replaces
  the positions (and makes the host reload them if they differ).

What the uplink follows (the execution lifetime, the next report position, the stream
sequence last applied, the taken watermark) is written into the positions snapshot's tags
together with the positions it describes, so a restarted uplink continues exactly there.
A stop drains: every queued intent is published, then the uplink waits (bounded) until
execution has taken them all and their reports are here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import nats.js.errors
import numpy as np
from nats.js import JetStreamContext

from appliance.cluster.client import (
    StreamReader,
    SubjectChain,
    ensure_stream,
    retrying,
)
from appliance.cluster.order_wire import (
    EVENTS,
    FIRST_PART,
    MAX_INTENTS,
    PART,
    RESET,
    ReportFollower,
    Reset,
    decode_events,
    exec_ids,
    intent_headers,
    reset_part,
)
from appliance.cluster.wire import COUNT, EPOCH, KIND, SEQ, SOURCE
from appliance.model.records import ReportKind
from appliance.runtime.messages import Ready
from appliance.runtime.positions import TAG_INTENTS_TAIL
from appliance.runtime.worker import Worker
from appliance.workers import netio
from appliance.workers.execution import HostLink

log = logging.getLogger(__name__)

# Snapshot tags of the uplink's own state (the protocol's tags are 0..2 in positions.py).
TAG_SRC_EPOCH, TAG_NEXT_REPORT, TAG_STREAM_SEQ, TAG_TAKEN = 8, 9, 10, 11
IDLE_S = 0.001
MAX_MSGS = 64
READ_WAIT_S = 0.05
DRAIN_WAIT_S = 30.0
POSITION_TOLERANCE = 1e-9


class RemoteLink(HostLink):
    """A host's queues and positions, with the reports stream's state in the tags.

    The intent-queue position in the tags is not the local queue's tail (intents leave
    the queue once the stream has them) but how far execution has *taken* them, with
    their reports here: a host reloading its positions counts every intent after it as
    still in flight, wherever it is on its way.
    """

    def __init__(self, w: Worker, h: int) -> None:
        super().__init__(w, h, extra_tags=self._tags)  # a new epoch: the host reloads
        data, tags, _ = self.snapshot.read()
        self.held = self.positions.positions
        self.held[...] = data  # what the previous incarnation published, if any
        self.follower = ReportFollower(tags[TAG_SRC_EPOCH], tags[TAG_NEXT_REPORT])
        self.stream_seq = tags[TAG_STREAM_SEQ]
        self.taken = tags[TAG_TAKEN]
        self.taken_pos = tags[TAG_INTENTS_TAIL]
        # (queue position after a published run, its last exec id), oldest first
        self.runs: deque[tuple[int, int]] = deque()

    def take(self, taken: int) -> None:
        """Execution has taken every intent up to exec id ``taken``."""
        self.taken = max(self.taken, taken)
        while self.runs and self.runs[0][1] <= self.taken:
            self.taken_pos = max(self.taken_pos, self.runs.popleft()[0])

    def _tags(self) -> dict[int, int]:
        """What this link adds to the protocol's tags (and the intents tail it replaces)."""
        # Never further back than the queue keeps records (in-flight intents are read
        # from its slots).
        in_flight_from = max(self.taken_pos, self.intents_q.head - self.intents_q.capacity)
        return {
            TAG_INTENTS_TAIL: in_flight_from,
            TAG_SRC_EPOCH: self.follower.epoch,
            TAG_NEXT_REPORT: self.follower.next_pos,
            TAG_STREAM_SEQ: self.stream_seq,
            TAG_TAKEN: self.taken,
        }


class HostUplink:
    """One remote-executed host: its link and its two subjects."""

    def __init__(self, w: Worker, js: JetStreamContext, h: int) -> None:
        cfg = w.config
        self.w, self.js = w, js
        self.name = cfg.hosts[h].name
        self.link = RemoteLink(w, h)
        self.layout = netio.host_layout(cfg, h)
        self.epoch = netio.epoch(w)
        subjects, self.specs = netio.subjects(cfg), netio.streams(cfg)
        self.subjects = subjects
        self.intents = SubjectChain(
            js, self.specs["intents"].name, subjects.intents(self.name), netio.keep_going(w)
        )
        self.reader: StreamReader | None = None
        self.reset: Reset | None = None
        self.published = 0  # highest exec id of this host's intents in the stream

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.w.config
        last = await self.intents.sync()
        if last is not None:
            h = last.headers or {}
            self.published = int(exec_ids(last.seq, int(h[COUNT]))[-1])
            if h.get(SOURCE) == cfg.instance and h.get(EPOCH) == str(self.epoch):
                stored = int(h[SEQ]) + int(h[COUNT])
                behind = stored - self.link.intents_q.tail
                if behind > 0:  # stored by an incarnation that died before releasing them
                    self.link.consumer.advance(behind)
                self.link.runs.append((stored, self.published))
                self.link.take(self.link.taken)
        start = await self._reports_start()
        self.reader = StreamReader(
            self.js, self.specs["reports"].name, self.subjects.reports_all(self.name)
        )
        await self.reader.open(start)
        self.link.positions.publish()
        log.info("%s: intents to %s, reports from %d", self.name, self.intents.subject, start)

    async def _reports_start(self) -> int:
        """After what the previous incarnation applied, while the stream still holds it;
        else at the last reset; else at the start of the stream."""
        stream = self.specs["reports"].name
        info = await retrying(lambda: self.js.stream_info(stream), self._go, "reports stream")
        if self.link.stream_seq and self.link.stream_seq + 1 >= info.state.first_seq:
            return self.link.stream_seq + 1

        async def last_reset():
            try:
                return await self.js.get_last_msg(stream, self.subjects.reports(self.name, RESET))
            except nats.js.errors.NotFoundError:
                return None

        msg = await retrying(last_reset, self._go, "last reset")
        if msg is None:
            return 1
        h = msg.headers or {}
        return msg.seq if h.get(PART) == "0" else int(h[FIRST_PART])

    def _go(self) -> bool:
        return not self.w.stopping

    # -- intents out -------------------------------------------------------------------

    async def push_intents(self) -> int:
        """Publish the next run of queued intents; how many (0: the queue is empty)."""
        link = self.link
        rows = link.consumer.peek(MAX_INTENTS).copy()  # SPSC: nothing overwrites them
        n = len(rows)
        if n == 0:
            return 0
        headers = intent_headers(self.w.config.instance, self.name, self.epoch, rows, self.layout)
        seq = await self.intents.append(rows.tobytes(), headers)
        link.consumer.advance(n)  # stored in the stream: the queue may let them go
        self.published = int(exec_ids(seq, n)[-1])
        link.runs.append((link.intents_q.tail, self.published))
        link.positions.publish(values=False)
        self.w.add("intents", n)
        return n

    # -- reports in --------------------------------------------------------------------

    async def pull_reports(self) -> None:
        for msg in await self.reader.fetch(MAX_MSGS, READ_WAIT_S):
            h = msg.headers or {}
            seq = msg.metadata.sequence.stream
            if h.get(KIND) == RESET:
                self._reset_part(msg.data, h, seq)
            elif h.get(KIND) == EVENTS:
                self._events(msg.data, h, seq)
            self.w.slot.set(self.w.c["net_lag"], msg.metadata.num_pending)

    def _reset_part(self, data: bytes, headers: dict, seq: int) -> None:
        self.reset = reset_part(data, headers, self.link.held.shape, self.reset)
        if self.reset is None or not self.reset.complete:
            return
        r, link = self.reset, self.link
        self.reset = None
        # Float noise (positions summed in another order) needs no reload by the host.
        off = np.abs(link.held - r.positions) > POSITION_TOLERANCE
        differ = np.flatnonzero(off.any(axis=1))
        if len(differ):
            # A checkpoint follows every report it includes: differing from it means a
            # report was lost or applied twice on the way.
            log.log(
                logging.ERROR if r.checkpoint and r.epoch == link.follower.epoch else logging.INFO,
                "%s: positions reset by execution (%s, reports from %d; %d agents differed, "
                "first %s: %s here, %s there)", self.name,
                "checkpoint" if r.checkpoint else "reload", r.head, len(differ), differ[0],
                link.held[differ[0]].tolist(), r.positions[differ[0]].tolist(),
            )  # fmt: skip
        link.held[...] = r.positions
        link.follower.reset(r.epoch, r.head)
        link.take(r.taken)
        link.stream_seq = seq
        # A reset that is no checkpoint (execution began a new lifetime, or skipped queued
        # reports) reloads the host even when positions agree: agents whose intent's report
        # will never come (journaled stale, an ack or reject skipped) wait on it for ever
        # otherwise, and once all do, the host sends nothing again.
        if len(differ) or not r.checkpoint:
            link.positions.resync()  # a new epoch: the host reloads from the snapshot
        else:
            link.positions.publish()
        self.w.slot.set(self.w.c["net_seq"], seq)

    def _events(self, data: bytes, headers: dict, seq: int) -> None:
        run, taken = decode_events(data, headers)
        link = self.link
        holes, stale = link.follower.holes, link.follower.stale
        rows = link.follower.accept(run)
        if link.follower.holes > holes:
            log.error("%s: reports before %d never came", self.name, run.first)
        if link.follower.stale > stale:
            log.warning("%s: reports of an execution lifetime without a reset", self.name)
        link.take(taken)
        link.stream_seq = seq
        link.send(rows)  # counts fills into positions, publishes them with the tags
        w = self.w
        w.slot.set(w.c["net_seq"], seq)
        w.add("reports", len(rows))
        w.add("fills", int((rows["kind"] == ReportKind.FILL).sum()))
        w.add("rejects", int((rows["kind"] == ReportKind.REJECT).sum()))

    # -- stop --------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Every intent published is taken by execution, with its reports here."""
        return len(self.link.consumer) == 0 and self.link.taken_pos >= self.link.intents_q.head

    def final_positions(self) -> list[list[float]]:
        """Non-zero positions as [host, population, agent, symbol, qty] rows."""
        return [[*k, qty] for k, qty in self.link.positions.told().items()]

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
        self.link.close()


def main(w: Worker) -> None:
    netio.run(w, _uplink)


async def _loop(step, w: Worker, idle: float) -> None:
    while True:
        if not await step():
            await asyncio.sleep(idle)


async def _uplink(w: Worker, js: JetStreamContext) -> None:
    specs = netio.streams(w.config)
    for name in ("intents", "reports"):
        await ensure_stream(js, specs[name])
    hosts: list[HostUplink] = []
    tasks: list[asyncio.Task] = []
    try:
        for h in w.config.local_hosts():
            hosts.append(HostUplink(w, js, h))
            await hosts[-1].start()
        w.send(Ready())
        for u in hosts:
            tasks.append(asyncio.create_task(_loop(u.push_intents, w, IDLE_S)))
            tasks.append(asyncio.create_task(_loop(_always(u.pull_reports), w, 0)))
        while not (w.stopping or w.draining):
            await asyncio.sleep(0.02)
            for t in tasks:
                if t.done():
                    t.result()  # a failed loop fails the worker (the supervisor restarts it)
        if w.draining and not w.stopping:
            await _drain(w, hosts)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for u in hosts:
            await u.close()


def _always(step):
    async def run() -> bool:
        await step()
        return True

    return run


async def _drain(w: Worker, hosts: list[HostUplink]) -> None:
    """Publish what is queued, then wait (bounded) for execution to take it all."""
    deadline = time.monotonic() + DRAIN_WAIT_S
    while not all(u.settled for u in hosts) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for u in hosts:
        if len(u.link.consumer):
            log.error("%s: %d intents still queued at the stop", u.name, len(u.link.consumer))
        elif not u.settled:
            log.warning(
                "%s: execution has not taken every intent yet (taken %d, published %d); "
                "they stay in the stream",
                u.name,
                u.link.taken,
                u.published,
            )
    positions = [row for u in hosts for row in u.final_positions()]
    log.info(
        "uplink final positions: %d non-flat, %s",
        len(positions),
        "settled" if all(u.settled for u in hosts) else "NOT settled",
        extra={
            "positions": positions,
            "epoch": netio.epoch(w),
            "heads": {str(u.link.host): u.link.intents_q.head for u in hosts},
        },
    )
