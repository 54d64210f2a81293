"""Archiving closed runs: the journal shrinks, every open position stays exact."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from appliance.model.records import OrderType, Side
from appliance.model.universe import Universe
from appliance.trading.archive import ArchiveError, archive_file, archive_runs
from appliance.trading.engine import ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.portfolio import Portfolio
from appliance.trading.risk import RiskLimits
from appliance.venues.paper import PaperVenue

SYMS = ["BTC/USD", "ETH/USD"]
LIMITS = {s: RiskLimits(1e6, 1e9) for s in SYMS}
HOUR = 3600 * 10**9


class Clock:
    def __init__(self) -> None:
        self.now = HOUR

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture
def engine(tmp_path, quotes):
    """engine(clock): a recovered, quoted engine on tmp_path's journal and venue files."""

    def make(clock: Clock) -> ExecutionEngine:
        journal = Journal(tmp_path / "journal.sqlite", synchronous="NORMAL")
        venue = PaperVenue(tmp_path / "venue.sqlite", len(SYMS), lot_size=0.001, clock=clock)
        e = ExecutionEngine(
            Universe.of(SYMS, 0.001, {(0, 0): 4}), LIMITS, journal, venue, clock=clock
        )
        e.recover()
        e.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=1e6))
        return e

    return make


@pytest.fixture
def trade_a_run(engine, intents, quotes):
    """trade_a_run(clock, rng, n=60): one run of agents trading market orders; one limit
    order rests over the run's end."""

    def run(clock: Clock, rng: np.random.Generator, n: int = 60) -> None:
        _trade(engine(clock), intents, quotes, rng, n)

    return run


def _trade(e: ExecutionEngine, intents, quotes, rng: np.random.Generator, n: int) -> None:
    seq0 = e.journal.reads.max_intent_seqs(e.journal.epoch).get(0, -1) + 1
    rows = [
        {"seq": seq0 + i, "agent": int(rng.integers(4)), "symbol": int(rng.integers(2)),
         "side": int(rng.choice([Side.BUY, Side.SELL])), "qty": float(rng.integers(1, 5)) / 1000}
        for i in range(n)
    ]  # fmt: skip
    for k in range(0, n, 7):
        e.process(intents(rows[k : k + 7]))
        px = 100 + rng.normal()
        e.on_ticks(quotes([0, 1], [px, px / 10], [px + 1, px / 10 + 1], size=1e6))
    e.process(intents([{"seq": seq0 + n, "agent": 3, "order_type": OrderType.LIMIT,
                        "limit_price": 50.0, "qty": 0.002}]))  # fmt: skip
    e.record_drained({0: seq0 + n + 1})
    e.close()


def state(path) -> tuple[dict, dict, int]:
    j = Journal(path, readonly=True)
    try:
        fills = j.reads.fills()
        book = Portfolio()
        book.apply_all(fills)
        avg = {k: book._pos[k].avg_price for k in book.positions()}
        return j.reads.positions_from_fills(), avg, len(fills)
    finally:
        j.close()


def test_archive_moves_closed_runs_and_keeps_positions_exact(tmp_path, engine, trade_a_run):
    clock, rng = Clock(), np.random.default_rng(3)
    for _ in range(3):
        trade_a_run(clock, rng)
        clock.now += HOUR
    journal = tmp_path / "journal.sqlite"
    positions, avg, fills = state(journal)
    assert positions and fills > 100

    cut = clock.now  # every run ended before it
    summary = archive_runs(journal, cut, tmp_path / "archive.sqlite")
    assert summary.runs == [1, 2, 3] and summary.fills > 0 and summary.carried > 0

    after, avg_after, fills_after = state(journal)
    assert after == positions
    assert avg_after == pytest.approx(avg, rel=1e-12)
    assert fills_after < fills
    with sqlite3.connect(tmp_path / "archive.sqlite") as arc:
        (moved,) = arc.execute("SELECT count(*) FROM fills").fetchone()
        assert moved == summary.fills
    # the resting limit order is still open: it stays, with what it covers
    j = Journal(journal, readonly=True)
    assert len(j.reads.open_orders()) == 3 and len(j.reads.open_venue_orders()) == 3
    j.close()

    # a start recovers from the smaller journal to the same positions
    e = engine(clock)
    assert e.positions() == positions
    e.record_drained({0: 0})
    e.close()

    # archiving again up to the same time has nothing new to move
    again = archive_runs(journal, cut, tmp_path / "archive.sqlite")
    assert again.orders == 0 and again.fills == 0
    assert state(journal)[0] == positions


def test_nothing_moves_before_the_first_run_ended(tmp_path, trade_a_run):
    clock, rng = Clock(), np.random.default_rng(4)
    trade_a_run(clock, rng)
    summary = archive_runs(tmp_path / "journal.sqlite", HOUR, tmp_path / "a.sqlite")
    assert summary.runs == [] and "nothing to archive" in str(summary)
    assert not (tmp_path / "a.sqlite").exists()  # no empty archive file left behind


def test_an_archive_never_mixes_two_journals(tmp_path, trade_a_run):
    """After a journal is started over, run ids begin at 1 again: its runs go to a file
    of their own, and an archive file of the old journal is refused, not appended to."""
    clock, rng = Clock(), np.random.default_rng(5)
    journal, first = tmp_path / "journal.sqlite", tmp_path / "before.sqlite"
    trade_a_run(clock, rng)
    clock.now += HOUR
    assert archive_runs(journal, clock.now, first).runs == [1]
    old = journal.rename(tmp_path / "old.sqlite")  # what `dynamind reset --journal` does
    (tmp_path / "venue.sqlite").rename(tmp_path / "old-venue.sqlite")
    trade_a_run(clock, rng)
    clock.now += HOUR
    held = state(journal)

    with pytest.raises(ArchiveError, match="holds runs of another journal"):
        archive_runs(journal, clock.now, first)
    assert state(journal) == held  # nothing moved
    second = archive_file(journal, first)
    assert second == tmp_path / "before-2.sqlite"
    assert archive_runs(journal, clock.now, second).runs == [1]
    assert archive_file(journal, first) == second  # the next archive of it goes there too
    assert archive_file(old, first) == first
    with sqlite3.connect(first) as a, sqlite3.connect(second) as b:
        runs_a = a.execute("SELECT run_id, started_ns FROM runs").fetchall()
        runs_b = b.execute("SELECT run_id, started_ns FROM runs").fetchall()
    assert [r for r, _ in runs_a] == [r for r, _ in runs_b] == [1] and runs_a != runs_b
