"""The positions-snapshot protocol between execution and each agent host, both sides.

Execution holds every agent's positions; a host's agents only learn them from reports. So
that a host can (re)start without counting a fill twice or missing one, execution
publishes each host's positions (``model.records.POSITION``, one row per agent, one column
per symbol) in a shared snapshot, with tags saying what they include:

- ``TAG_REPORTS_HEAD``: every report before this report-queue position is counted;
- ``TAG_INTENTS_TAIL``: every intent before this intent-queue position was taken;
- ``TAG_EPOCH``: bumped whenever hosts must reload from the snapshot instead of going on
  with reports (a new execution incarnation, reports dropped, re-delivered intents).

Execution publishes right after every push of reports and every take of intents
(:class:`PositionsPublisher`). A host (:class:`PositionsReader`) loads the snapshot once it
covers every report it has applied, skips reports before the tagged head, and treats its
intents after the tagged tail as still in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.model.records import INTENT, ReportKind
from appliance.shm import RecordQueue
from appliance.shm.snapshot import SharedSnapshot, SnapshotBusy

log = logging.getLogger(__name__)

TAG_REPORTS_HEAD, TAG_EPOCH, TAG_INTENTS_TAIL = 0, 1, 2
POLL_S = 0.001
#: How long a stopping agent host waits for execution to take its last intents and cover
#: its reports. Normally a moment; a stop right behind a crash of execution waits for its
#: restart, which on a loaded machine (imports, journal recovery) takes seconds.
SETTLE_TIMEOUT_S = 30.0


def _offsets(agents: Sequence[int]) -> np.ndarray:
    """First row of each population in the snapshot, and one past the last."""
    return np.cumsum([0, *agents])


class PositionsPublisher:
    """Execution's side for one host: the positions it reported, published with their tags.

    ``agents`` is host ``host``'s agents per population; ``reports`` and ``intents`` are
    its report queue (execution pushes) and intent queue (execution takes).
    """

    def __init__(
        self,
        snapshot: SharedSnapshot,
        host: int,
        agents: Sequence[int],
        reports: RecordQueue,
        intents: RecordQueue,
    ) -> None:
        self.snapshot = snapshot
        self.host = host
        self.offsets = _offsets(agents)
        self.reports = reports
        self.intents = intents
        self.positions = np.zeros(snapshot.shape, dtype=snapshot.array.dtype)
        # A new publisher is a new execution incarnation: hosts must reload.
        self.epoch = int(snapshot.tag(TAG_EPOCH)) + 1

    def load(self, positions: dict[tuple[int, int, int, int], float]) -> None:
        """Set (not publish) from execution's (host, population, agent, symbol) -> qty."""
        self.positions[...] = 0.0
        for (h, pop, agent, sym), qty in positions.items():
            if h == self.host:
                self.positions[self.offsets[pop] + agent, sym] = qty

    def apply(self, reports: np.ndarray) -> np.ndarray | None:
        """Count the fills among ``reports``; the rows they moved (None: no fill)."""
        fills = reports[reports["kind"] == ReportKind.FILL]
        if not len(fills):
            return None
        rows = self.offsets[fills["population"]] + fills["agent"]
        np.add.at(
            self.positions,
            (rows, fills["symbol"]),
            fills["side"].astype(np.float64) * fills["fill_qty"],
        )
        return rows

    def publish(self, rows: np.ndarray | None = None, values: bool = True) -> None:
        """Publish positions (all, ``rows`` only, or none) with the tags saying what they
        include: every report pushed so far, every intent taken so far."""
        tags = {
            TAG_REPORTS_HEAD: self.reports.head,
            TAG_EPOCH: self.epoch,
            TAG_INTENTS_TAIL: self.intents.tail,
        }
        if not values:
            self.snapshot.write(None, tags)
        elif rows is None:
            self.snapshot.write(self.positions, tags)
        else:
            self.snapshot.write(self.positions[rows], tags, rows=rows)

    def reported(self, rows: np.ndarray | None) -> None:
        """After reports were pushed: publish the rows their fills moved, or the tags alone
        (a host resyncing waits until the snapshot covers every report it has applied)."""
        if rows is None:
            self.publish(values=False)
        else:
            self.publish(np.unique(rows))

    def resync(self) -> None:
        """Have the host reload everything from the snapshot rather than from reports."""
        self.epoch += 1
        self.publish()

    def told(self) -> dict[tuple[int, int, int, int], float]:
        """The non-flat positions published, as (host, population, agent, symbol) -> qty."""
        out = {}
        for p in range(len(self.offsets) - 1):
            rows = self.positions[self.offsets[p] : self.offsets[p + 1]]
            for agent, sym in zip(*np.nonzero(rows), strict=True):
                out[(self.host, p, int(agent), int(sym))] = float(rows[agent, sym])
        return out


@dataclass(frozen=True)
class Loaded:
    """Positions for a host's populations: per population, each agent's position in its
    own symbol and the quantity of its intents still in flight."""

    held: list[np.ndarray]
    in_flight: list[np.ndarray]


class PositionsReader:
    """An agent host's side: loads its agents' positions from execution's snapshot.

    ``agent_symbols`` has, per population, the symbol column of each of its agents;
    ``reports`` and ``intents`` are the host's report queue (it consumes) and intent queue
    (it produces).
    """

    def __init__(
        self,
        snapshot: SharedSnapshot,
        agent_symbols: Sequence[np.ndarray],
        reports: RecordQueue,
        intents: RecordQueue,
    ) -> None:
        self.snapshot = snapshot
        self.agent_symbols = [np.asarray(s, dtype=np.intp) for s in agent_symbols]
        self.offsets = _offsets([len(s) for s in agent_symbols])
        self.reports = reports
        self.intents = intents
        self.epoch = -1  # nothing loaded yet
        self.skip_reports_before = 0  # reports before this position are in what was loaded

    @property
    def stale(self) -> bool:
        """Execution asked hosts to reload (see the module docstring)."""
        return self.snapshot.tag(TAG_EPOCH) != self.epoch

    def load(self, give_up: Callable[[], bool]) -> Loaded | None:
        """Wait until the snapshot covers every report this host has applied (execution
        publishes right after pushing, so that is a moment), then take it.

        ``give_up`` is asked between tries; None when it said so.
        """
        while True:
            try:
                data, tags, _ = self.snapshot.read()
                if tags[TAG_REPORTS_HEAD] >= self.reports.tail:
                    break
            except SnapshotBusy:
                pass
            if give_up():
                return None
            time.sleep(POLL_S)
        changed = tags[TAG_EPOCH] != self.epoch
        self.epoch = tags[TAG_EPOCH]
        self.skip_reports_before = tags[TAG_REPORTS_HEAD]
        flying = self._in_flight(tags[TAG_INTENTS_TAIL])
        held, in_flight = [], []
        for p, symbols in enumerate(self.agent_symbols):
            rows = data[self.offsets[p] : self.offsets[p + 1]]
            held.append(rows[np.arange(len(symbols)), symbols])
            mine = flying[flying["population"] == p]
            qty = np.zeros(len(symbols))
            qty[mine["agent"]] = mine["side"] * mine["qty"]
            in_flight.append(qty)
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "positions loaded from execution snapshot (epoch %d, reports from %d, "
            "%d intents in flight)",
            self.epoch,
            self.skip_reports_before,
            len(flying),
        )
        return Loaded(held, in_flight)

    def _in_flight(self, tail: int) -> np.ndarray:
        """Copies of the intents this host published from queue position ``tail`` on.

        The producer's own records: nothing overwrites them but this process."""
        head = self.intents.head
        if head <= tail:
            return np.zeros(0, INTENT)
        seqs = np.arange(tail, head, dtype=np.int64)
        return self.intents.records[seqs & self.intents.mask]

    def settled(self) -> list[np.ndarray] | None:
        """Execution's positions per population (each agent's own symbol) once it took
        every intent this host published and the host applied every report it pushed;
        None before that, or while the snapshot is busy or stale (then :meth:`load`)."""
        try:
            data, tags, _ = self.snapshot.read()
        except SnapshotBusy:
            return None
        if not (
            tags[TAG_EPOCH] == self.epoch
            and tags[TAG_REPORTS_HEAD] == self.reports.tail == self.reports.head
            and tags[TAG_INTENTS_TAIL] == self.intents.head
        ):
            return None
        return [
            data[self.offsets[p] : self.offsets[p + 1]][np.arange(len(symbols)), symbols]
            for p, symbols in enumerate(self.agent_symbols)
        ]

    def describe(self) -> str:
        """Where the snapshot and the queues stand, for a check that did not settle."""
        tags = [int(self.snapshot.tag(t)) for t in (TAG_REPORTS_HEAD, TAG_EPOCH, TAG_INTENTS_TAIL)]
        return (
            f"snapshot tags {tags}, epoch {self.epoch}, reports tail {self.reports.tail} "
            f"head {self.reports.head}, intents head {self.intents.head}"
        )


def compare(
    theirs: Sequence[np.ndarray],
    mine: Sequence[np.ndarray],
    settled: Sequence[np.ndarray],
    shown: int = 5,
) -> tuple[int, list[tuple[int, int, float, float]]]:
    """Compare execution's positions with the agents' own, per population, for the agents
    marked ``settled``: (how many were compared, up to ``shown`` differing agents per
    population as (population, agent, mine, theirs))."""
    checked, differ = 0, []
    for p, (t, m, s) in enumerate(zip(theirs, mine, settled, strict=True)):
        bad = np.flatnonzero(s & ~np.isclose(m, t, rtol=0, atol=1e-9))
        checked += int(s.sum())
        differ += [(p, int(a), float(m[a]), float(t[a])) for a in bad[:shown]]
    return checked, differ
