"""The positions-snapshot protocol: execution's publisher and a host's reader, on real
segments (a snapshot and the host's two queues), each side driven as its process drives it."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.model.records import INTENT, POSITION, REPORT, ReportKind
from appliance.runtime.positions import PositionsPublisher, PositionsReader, compare
from appliance.shm import RecordQueue
from appliance.shm.snapshot import SharedSnapshot

HOST = 1
AGENTS = [3, 2]  # per population
SYMBOLS = [np.array([0, 1, 0]), np.array([1, 1])]  # each agent's symbol, per population


class Pair:
    """Both sides of one host's link, as execution and the host hold them."""

    def __init__(self, instance: str) -> None:
        self.snapshot = SharedSnapshot.create(instance, "positions.1", POSITION, (5, 2))
        self.intents = RecordQueue.create(instance, "intents.1", INTENT, 16)
        self.reports = RecordQueue.create(instance, "reports.1", REPORT, 16)
        self.host_out = self.intents.producer(seq_field="seq")
        self.host_in = self.reports.consumer()
        self.exec_in = self.intents.consumer()
        self.exec_out = self.reports.producer(seq_field="seq")
        self.publisher = PositionsPublisher(self.snapshot, HOST, AGENTS, self.reports, self.intents)
        self.reader = PositionsReader(self.snapshot, SYMBOLS, self.reports, self.intents)

    def push_intent(self, population: int, agent: int, side: int, qty: float) -> None:
        rec = np.zeros(1, INTENT)
        rec[["population", "agent", "side", "qty", "host"]][0] = (population, agent, side, qty, 1)
        rec["symbol"] = SYMBOLS[population][agent]
        assert self.host_out.push(rec) == 1

    def execution_fills_all(self) -> np.ndarray:
        """Execution takes every queued intent and fills it: push, then publish."""
        taken = self.exec_in.pop(16)
        reports = np.zeros(len(taken), REPORT)
        for f in ("agent", "population", "symbol", "side"):
            reports[f] = taken[f]
        reports["fill_qty"] = taken["qty"]
        reports["kind"] = ReportKind.FILL
        rows = self.publisher.apply(reports)
        assert self.exec_out.push(reports) == len(reports)
        self.publisher.reported(rows)
        return reports

    def close(self) -> None:
        for role in (self.host_out, self.host_in, self.exec_in, self.exec_out):
            role.close()
        for seg in (self.snapshot, self.intents, self.reports):
            seg.destroy()


@pytest.fixture
def pair(instance):
    p = Pair(instance)
    yield p
    p.close()


def never() -> bool:
    return False


def test_a_host_loads_what_execution_published_for_it(pair):
    pub, reader = pair.publisher, pair.reader
    assert reader.stale  # nothing loaded yet
    pub.load({(HOST, 0, 1, 1): 0.5, (HOST, 1, 0, 1): -0.2, (0, 0, 0, 0): 9.0})  # host 0 not ours
    pub.publish()
    loaded = reader.load(never)
    assert not reader.stale and reader.epoch == pub.epoch == 1
    assert [h.tolist() for h in loaded.held] == [[0.0, 0.5, 0.0], [-0.2, 0.0]]
    assert [f.tolist() for f in loaded.in_flight] == [[0.0, 0.0, 0.0], [0.0, 0.0]]
    assert pub.told() == {(HOST, 0, 1, 1): 0.5, (HOST, 1, 0, 1): -0.2}


def test_intents_not_yet_taken_are_in_flight_and_fills_land_once(pair):
    pub, reader = pair.publisher, pair.reader
    pub.publish()
    reader.load(never)
    pair.push_intent(0, 2, +1, 0.1)
    pair.push_intent(1, 1, -1, 0.3)
    loaded = reader.load(never)  # execution took nothing yet: both are in flight
    assert [f.tolist() for f in loaded.in_flight] == [[0.0, 0.0, 0.1], [0.0, -0.3]]

    pair.execution_fills_all()
    assert reader.settled() is None  # the host has not applied the two reports yet
    loaded = reader.load(never)  # covers the reports: loading now would count them
    assert [f.tolist() for f in loaded.in_flight] == [[0.0, 0.0, 0.0], [0.0, 0.0]]
    assert [h.tolist() for h in loaded.held] == [[0.0, 0.0, 0.1], [0.0, -0.3]]
    assert reader.skip_reports_before == 2  # ...so the host skips them

    pair.host_in.advance(len(pair.host_in.peek(16)))
    theirs = reader.settled()
    assert [t.tolist() for t in theirs] == [[0.0, 0.0, 0.1], [0.0, -0.3]]


def test_a_host_waits_until_the_snapshot_covers_the_reports_it_applied(pair):
    pub, reader = pair.publisher, pair.reader
    pub.publish()
    reader.load(never)
    pair.push_intent(0, 0, +1, 0.25)
    taken = pair.exec_in.pop(16)
    reports = np.zeros(1, REPORT)
    reports[["agent", "population", "symbol", "side", "fill_qty"]][0] = (0, 0, 0, 1, 0.25)
    reports["kind"] = ReportKind.FILL
    rows = pub.apply(reports)
    pair.exec_out.push(reports)  # pushed, not yet published (execution between the two)
    pair.host_in.advance(len(pair.host_in.peek(16)))  # ...and the host already applied it
    tries = []
    assert reader.load(lambda: tries.append(1) or len(tries) > 3) is None
    assert len(tries) == 4
    pub.reported(rows)
    loaded = reader.load(never)
    assert loaded.held[0][0] == 0.25 and len(taken) == 1


def test_resync_makes_the_host_reload(pair):
    pub, reader = pair.publisher, pair.reader
    pub.publish()
    reader.load(never)
    assert not reader.stale
    pub.positions[0, 0] = 1.0  # e.g. reports dropped: the host will never see that fill
    pub.resync()
    assert reader.stale
    assert reader.load(never).held[0][0] == 1.0 and reader.epoch == 2
    # a new execution incarnation starts one epoch further
    again = PositionsPublisher(pair.snapshot, HOST, AGENTS, pair.reports, pair.intents)
    assert again.epoch == 3


def test_settled_needs_every_intent_taken(pair):
    pub, reader = pair.publisher, pair.reader
    pub.publish()
    reader.load(never)
    assert reader.settled() is not None
    pair.push_intent(1, 0, +1, 0.1)
    assert reader.settled() is None
    assert "intents head 1" in reader.describe()
    pair.execution_fills_all()
    pair.host_in.advance(len(pair.host_in.peek(16)))
    assert reader.settled()[1].tolist() == [0.1, 0.0]


def test_compare_counts_settled_agents_and_names_differences():
    theirs = [np.array([0.0, 0.5, 0.1]), np.array([-0.2, 0.0])]
    mine = [np.array([0.0, 0.5, 0.3]), np.array([-0.2, 0.7])]
    settled = [np.array([True, True, True]), np.array([True, False])]
    checked, differ = compare(theirs, mine, settled)
    assert checked == 4
    assert differ == [(0, 2, 0.3, 0.1)]
