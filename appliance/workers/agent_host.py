"""Agent host worker: runs its populations over every tick batch and pushes their intents.

Ticks are read as zero-copy views of the ring; each population copies what it needs
(``prepare``), the view is validated against the writer's claim cursor, and only then do
the populations advance (``step``), so a lapped batch leaves no trace in agent state.

Positions come from the execution side: the execution process publishes each host's
positions in a snapshot tagged with the report-queue position it includes. On start (and
whenever the execution process restarts, which bumps the snapshot's epoch) the host loads
that snapshot and ignores reports before the tagged position, so no fill is counted twice
or missed. State is warmed from the ticks still in the ring, with intents suppressed.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from appliance.agents import Population, TickBatch, make_population
from appliance.agents.compute import to_host
from appliance.model.records import INTENT, POSITION, REPORT, TICK, ReportKind, TickKind
from appliance.runtime import layout
from appliance.runtime.positions import TAG_EPOCH, TAG_INTENTS_TAIL, TAG_REPORTS_HEAD
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing, RecordQueue
from appliance.shm.snapshot import SharedSnapshot, SnapshotBusy

log = logging.getLogger(__name__)

READ_BATCH = 4096
REPORT_BATCH = 4096
WAIT_S = 0.02
PUSH_WAIT_S = 0.1


class Host:
    """The populations of one host and the bookkeeping between them and the queues."""

    def __init__(self, w: Worker) -> None:
        cfg = w.config
        self.w = w
        h = w.process.host
        self.host = h
        self.populations: list[Population] = []
        offsets = [0]
        for p, pop in enumerate(cfg.hosts[h].populations):
            self.populations.append(
                make_population(
                    pop.kind,
                    pop.agents,
                    cfg.population_symbols(h, p),
                    pop.params,
                    cfg.population_seed(h, p),
                    cfg.compute.backend,
                    pop.grid,
                )
            )
            offsets.append(offsets[-1] + pop.agents)
        self.offsets = offsets
        inst = cfg.instance
        self.ring = BroadcastRing.attach(inst, layout.TICKS, TICK, cfg.ring_capacity)
        self.intents_q = RecordQueue.attach(inst, layout.intents_queue(h), INTENT)
        self.reports_q = RecordQueue.attach(inst, layout.reports_queue(h), REPORT)
        self.snapshot = SharedSnapshot.attach(
            inst,
            layout.positions_snapshot(h),
            POSITION,
            (layout.host_agents(cfg, h), len(cfg.symbols)),
        )
        self.reader = self.ring.reader(
            w.strategy, start="oldest", slot=layout.FIRST_HOST_READER + h
        )
        self.producer = self.intents_q.producer(w.strategy, seq_field="seq")
        self.consumer = self.reports_q.consumer(w.strategy)
        self.epoch = -1
        self.skip_reports_before = 0
        self.warm = True  # replaying the ring's history: state only, no intents
        self._buf = np.zeros(READ_BATCH, INTENT)

    def resync_positions(self, deadline: float | None = None) -> bool:
        """Load positions from the execution side's snapshot (see the module docstring).

        Waits until the snapshot covers every report this host has already applied
        (execution publishes right after pushing, so that is a moment), then marks the
        agents whose intents are still in the intent queue as pending with them. Gives up
        (False) when told to stop, or at the monotonic ``deadline`` when one is given.
        """
        while True:
            try:
                data, tags, _ = self.snapshot.read()
                if tags[TAG_REPORTS_HEAD] >= self.reports_q.tail:
                    break
            except SnapshotBusy:
                pass
            self.w.tick()
            if deadline is None and self.w.stopping:
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        changed = tags[TAG_EPOCH] != self.epoch
        self.epoch = tags[TAG_EPOCH]
        self.skip_reports_before = tags[TAG_REPORTS_HEAD]
        flying = self._in_flight(tags[TAG_INTENTS_TAIL])
        for p, pop in enumerate(self.populations):
            rows = data[self.offsets[p] : self.offsets[p + 1]]
            mine = flying[flying["population"] == p]
            in_flight = np.zeros(pop.n_agents)
            in_flight[mine["agent"]] = mine["side"] * mine["qty"]
            pop.set_positions(rows[np.arange(pop.n_agents), pop.agent_symbol], in_flight)
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "positions loaded from execution snapshot (epoch %d, reports from %d, "
            "%d intents in flight)",
            self.epoch,
            self.skip_reports_before,
            len(flying),
        )
        return True

    def _in_flight(self, tail: int) -> np.ndarray:
        """Copies of the intents this host published from queue position ``tail`` on.

        The producer's own records: nothing overwrites them but this process."""
        head = self.intents_q.head
        if head <= tail:
            return np.zeros(0, INTENT)
        seqs = np.arange(tail, head, dtype=np.int64)
        return self.intents_q.records[seqs & self.intents_q.mask]

    def poll_reports(self) -> int:
        view = self.consumer.peek(REPORT_BATCH)
        n = len(view)
        if n == 0:
            return 0
        fresh = view[view["seq"] >= self.skip_reports_before]
        pops = fresh["population"]
        for p, pop in enumerate(self.populations):
            mine = fresh[pops == p]
            if len(mine):
                pop.on_reports(mine)
        self.consumer.advance(n)  # after applying: a crash here re-reads, never skips
        self.w.add("reports", len(fresh))
        kinds = fresh["kind"]
        self.w.add("fills", int((kinds == ReportKind.FILL).sum()))
        self.w.add("rejects", int((kinds == ReportKind.REJECT).sum()))
        return n

    def on_ticks(self, view: np.ndarray, emit: bool) -> None:
        """Every population decides on every tick of the view; one net intent per agent
        and batch goes out (signals and intents are both counted)."""
        batch = TickBatch.from_ticks(view)  # one copy, shared by the populations
        if not self.reader.valid():
            self.w.add("tick_gaps", len(view))
            return
        self.w.add("ticks_in", len(view))
        self.w.add("feed_gaps", int((view["kind"] == TickKind.GAP).sum()))
        now = time.time_ns()
        for p, pop in enumerate(self.populations):
            signals = pop.counters["signals"]
            intents = pop.step(batch, now)
            self.w.add("signals", pop.counters["signals"] - signals)
            if not emit or len(intents) == 0:
                continue
            n = len(intents)
            buf = self._buf[:n] if n <= len(self._buf) else np.zeros(n, INTENT)
            created = time.time_ns()
            intents.write(buf, population=p, host=self.host, created_ns=created)
            self._push(buf)
            self.w.slot.observe_many(created - intents.tick_ns)

    def _push(self, buf: np.ndarray) -> None:
        done = 0
        while done < len(buf):
            done += self.producer.push_wait(buf[done:], PUSH_WAIT_S)
            if done < len(buf):
                # Backpressure: execution is behind. Keep beating and wait; intents that
                # were never pushed were never published, so stopping loses nothing.
                self.w.add("intents_full")
                self.w.tick()
                if self.w.stopping:
                    break
        self.w.add("intents", done)

    def check_positions(self, timeout: float = 5.0) -> dict:
        """At a clean stop: do the agents hold the positions execution holds for them?

        Compared once execution has taken every intent this host published and the snapshot
        covers exactly the reports this host applied, for the agents with nothing open
        (a resting limit order keeps its agent pending).
        """
        deadline = time.monotonic() + timeout
        if self.warm:  # warm-up steps marked agents pending without sending anything
            self.resync_positions(deadline)
            self.warm = False
        while True:
            self.poll_reports()
            try:
                data, tags, _ = self.snapshot.read()
            except SnapshotBusy:
                tags = None
            if tags is not None and tags[TAG_EPOCH] != self.epoch:
                self.resync_positions(deadline)  # execution restarted while we stopped
                continue
            if (
                tags is not None
                and tags[TAG_EPOCH] == self.epoch
                and tags[TAG_REPORTS_HEAD] == self.reports_q.tail
                and tags[TAG_INTENTS_TAIL] == self.intents_q.head
                and len(self.consumer) == 0
            ):
                break  # execution took all our intents and we applied all its reports
            if time.monotonic() > deadline:
                return {
                    "checked": 0,
                    "skipped": f"execution did not settle in time (snapshot tags {tags}, "
                    f"epoch {self.epoch}, reports tail {self.reports_q.tail}, "
                    f"intents head {self.intents_q.head})",
                }
            time.sleep(0.005)
        checked, differ = 0, []
        for p, pop in enumerate(self.populations):
            rows = data[self.offsets[p] : self.offsets[p + 1]]
            theirs = rows[np.arange(pop.n_agents), pop.agent_symbol]
            mine = to_host(pop.position)
            settled = pop.settled()
            bad = np.flatnonzero(settled & ~np.isclose(mine, theirs, rtol=0, atol=1e-9))
            checked += int(settled.sum())
            differ += [[p, int(a), float(mine[a]), float(theirs[a])] for a in bad[:5]]
        return {"checked": checked, "differ": differ}

    def close(self) -> None:
        for role in (self.reader, self.producer, self.consumer):
            role.close()
        for seg in (self.ring, self.intents_q, self.reports_q, self.snapshot):
            seg.close()


def main(w: Worker) -> None:
    host = Host(w)
    try:
        host.resync_positions()
        started = time.time_ns()
        w.event("ready")
        while not w.stopping:
            w.tick()
            host.poll_reports()
            if host.snapshot.tag(TAG_EPOCH) != host.epoch:
                host.resync_positions()  # the execution process restarted
            if host.reader.available() <= 0:
                host.reader.wait(WAIT_S)
                continue
            view = host.reader.read(READ_BATCH)
            if host.warm and (len(view) == 0 or int(view["recv_ns"][-1]) >= started):
                host.warm = False
                host.resync_positions()  # warm-up marked agents pending: clear that
            host.on_ticks(view, emit=not host.warm)
        if os.getppid() == w.spec.supervisor_pid:  # a stop, not an orphaning
            w.event("positions_check", **host.check_positions())
    finally:
        host.close()
