"""Agent host worker: runs its populations over every tick batch and pushes their intents.

Ticks are read as zero-copy views of the ring; each population copies what it needs
(``prepare``), the view is validated against the writer's claim cursor, and only then do
the populations advance (``step``), so a lapped batch leaves no trace in agent state.

Positions come from the execution side (runtime/positions.py): on start, and whenever
execution asks for it (a new epoch), the host loads them from execution's snapshot and
ignores reports before the position the snapshot covers, so no fill is counted twice or
missed. State is warmed from the ticks still in the ring, with intents suppressed.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from appliance.agents import Population, TickBatch
from appliance.agents.compute import to_host
from appliance.agents.host_core import HostCore
from appliance.model.records import INTENT, POSITION, REPORT, TICK, ReportKind, TickKind
from appliance.runtime import layout
from appliance.runtime.messages import PositionsCheck, Ready
from appliance.runtime.positions import SETTLE_TIMEOUT_S, PositionsReader, compare
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing, RecordQueue
from appliance.shm.snapshot import SharedSnapshot
from appliance.workers import compose

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
        self.core = HostCore(h, compose.host_populations(cfg, h))
        self.populations: list[Population] = self.core.populations
        offsets = [0]
        for pop in self.populations:
            offsets.append(offsets[-1] + pop.n_agents)
        self.offsets = offsets
        inst = cfg.instance
        self.ring = BroadcastRing.attach(inst, layout.TICKS, TICK, cfg.ring_capacity)
        self.intents_q = RecordQueue.attach(inst, layout.intents_queue(h), INTENT)
        self.reports_q = RecordQueue.attach(inst, layout.reports_queue(h), REPORT)
        self.snapshot = SharedSnapshot.attach(
            inst,
            layout.positions_snapshot(h),
            POSITION,
            layout.positions_shape(cfg, h),
        )
        self.positions = PositionsReader(
            self.snapshot,
            [pop.agent_symbol for pop in self.populations],
            self.reports_q,
            self.intents_q,
        )
        # State warms up from the ring's history, less the eighth the writer reuses next
        # (a replay from the very oldest record has its first batches lapped).
        history = self.ring.claim_cursor - self.ring.capacity + self.ring.capacity // 8
        self.reader = self.ring.reader(
            w.strategy, start=max(0, history), slot=layout.FIRST_HOST_READER + h
        )
        self.producer = self.intents_q.producer(w.strategy, seq_field="seq")
        self.consumer = self.reports_q.consumer(w.strategy)
        self.warm = True  # replaying the ring's history: state only, no intents
        self.warmed = 0  # ticks replayed (not counted as ticks_in)

    def resync_positions(self, deadline: float | None = None) -> bool:
        """Load positions from the execution side's snapshot (see runtime/positions.py).

        Gives up (False) when told to stop, or at the monotonic ``deadline`` when one is
        given (then stopping does not matter: the clean-stop check is running).
        """

        def give_up() -> bool:
            self.w.tick()
            if deadline is None:
                return self.w.stopping
            return time.monotonic() > deadline

        loaded = self.positions.load(give_up)
        if loaded is None:
            return False
        for pop, held, in_flight in zip(
            self.populations, loaded.held, loaded.in_flight, strict=True
        ):
            pop.set_positions(held, in_flight)
        return True

    def prime(self) -> None:
        """Build the populations' compiled kernels before ready, while the supervisor
        allows for start-up: built in the first real batch instead, a compile (seconds on
        a loaded machine) would read as missed heartbeats."""
        self.core.prime(time.time_ns())

    def poll_reports(self) -> int:
        view = self.consumer.peek(REPORT_BATCH)
        n = len(view)
        if n == 0:
            return 0
        fresh = view[view["seq"] >= self.positions.skip_reports_before]
        self.core.deliver(fresh)
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
        if emit:
            self.w.add("ticks_in", len(view))
            self.w.add("feed_gaps", int((view["kind"] == TickKind.GAP).sum()))
        else:
            self.warmed += len(view)
        intents, signals = self.core.decide(batch, time.time_ns(), time.time_ns, emit)
        self.w.add("signals", signals)
        if len(intents):
            self._push(intents)
            self.w.slot.observe_many(intents["created_ns"] - intents["tick_ns"])

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

    def check_positions(self, timeout: float = SETTLE_TIMEOUT_S) -> PositionsCheck:
        """At a clean stop: do the agents hold the positions execution holds for them?

        Compared once execution has taken every intent this host published and the snapshot
        covers exactly the reports this host applied, for the agents with nothing open
        (a resting limit order keeps its agent pending).
        """
        deadline = time.monotonic() + timeout
        if self.warm:  # warm-up steps marked agents pending without sending anything
            self.resync_positions(deadline)
            self.warm = False
        while (theirs := self.positions.settled()) is None:
            self.w.tick()
            if self.w.orphaned:  # a kill of the supervisor while we stopped
                return PositionsCheck(0, skipped="the supervisor is gone")
            self.poll_reports()
            if self.positions.stale:
                self.resync_positions(deadline)  # execution restarted while we stopped
            if time.monotonic() > deadline:
                return PositionsCheck(
                    0, skipped=f"execution did not settle in time ({self.positions.describe()})"
                )
            time.sleep(0.005)
        checked, differ = compare(
            theirs,
            [to_host(pop.position) for pop in self.populations],
            [pop.settled() for pop in self.populations],
        )
        return PositionsCheck(checked, differ)

    def close(self) -> None:
        for role in (self.reader, self.producer, self.consumer):
            role.close()
        for seg in (self.ring, self.intents_q, self.reports_q, self.snapshot):
            seg.close()


def main(w: Worker) -> None:
    host = Host(w)
    try:
        host.prime()
        host.resync_positions()
        started = time.time_ns()
        w.send(Ready())
        while not w.stopping:
            w.tick()
            host.poll_reports()
            if host.positions.stale:
                host.resync_positions()  # the execution process restarted
            if host.reader.available() <= 0:
                host.reader.wait(WAIT_S)
                continue
            view = host.reader.read(READ_BATCH)
            if host.warm and (len(view) == 0 or int(view["recv_ns"][-1]) >= started):
                host.warm = False
                if host.warmed:  # a restart, not a first start with an empty ring
                    log.info(
                        "state warmed from %d ticks of the ring's history (%d lost to the writer)",
                        host.warmed,
                        host.reader.lost,
                    )
                host.resync_positions()  # warm-up marked agents pending: clear that
            host.on_ticks(view, emit=not host.warm)
        if not w.orphaned:  # a stop, not an orphaning
            w.send(
                host.check_positions()
                if w.check_at_stop
                else PositionsCheck(
                    0, skipped="execution takes no intents (storage failing) or did not start"
                )
            )
    finally:
        host.close()
