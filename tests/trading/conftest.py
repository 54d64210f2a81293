"""Fixtures of the execution-side tests: engines on real journal and paper-venue files,
crash injection, and readers of what the journal stored."""

from __future__ import annotations

import collections
import json
import time
from types import SimpleNamespace

import pytest

from appliance.model.orders import Fill, IntentOrder, OrderState
from appliance.model.records import OrderType, ReportKind
from appliance.model.universe import Universe
from appliance.trading.engine import EngineConfig, ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.portfolio import Portfolio
from appliance.trading.risk import RiskLimits
from appliance.venues.paper import PaperVenue

SYMS = ["BTC/USD", "ETH/USD", "SOL/USD"]
LIMITS = {
    "BTC/USD": RiskLimits(10.0, 1e6),
    "ETH/USD": RiskLimits(100.0, 1e5),
    "SOL/USD": RiskLimits(100.0, 1e5),
}


class Crash(BaseException):
    """A SIGKILL stand-in: not an Exception, so nothing in the engine catches it."""


@pytest.fixture
def make_engine(tmp_path, quotes):
    """make_engine(epoch="queues-1", ...): an engine on tmp_path's journal and venue files
    (the same files on every call, as a restarted process finds them), recovered (its
    summary in ``.summary``) and quoted BTC/USD 100/101, ETH/USD 10/11, size 50. ``clock``
    is the engine's (a Clock fixture steps time by hand)."""

    def make(
        epoch: str | None = "queues-1",
        *,
        quote: bool = True,
        recover: bool = True,
        symbols: list[str] = SYMS,
        lot: float = 0.001,
        agents: dict[tuple[int, int], int] | None = None,
        clock=time.time_ns,
        **cfg,
    ) -> ExecutionEngine:
        journal = Journal(tmp_path / "journal.sqlite", synchronous="NORMAL")
        venue = PaperVenue(tmp_path / "venue.sqlite", len(symbols), lot_size=lot,
                           taker_bps=10, maker_bps=2, synchronous="NORMAL")  # fmt: skip
        limits = {s: LIMITS.get(s, RiskLimits(10.0, 1e6)) for s in symbols}
        universe = Universe.of(symbols, lot, agents)
        e = ExecutionEngine(universe, limits, journal, venue, EngineConfig(**cfg), clock)
        if recover:
            e.summary = e.recover(epoch)
            if quote:
                e.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=50.0))
        return e

    return make


class CrashOn:
    """crash_on(obj, name, call): obj.name raises ``crash_on.Crash`` on its call-th call
    (1-based) and passes through otherwise."""

    Crash = Crash

    def __call__(self, obj, name: str, call: int) -> None:
        real = getattr(obj, name)
        calls = {"n": 0}

        def wrapper(*a, **kw):
            calls["n"] += 1
            if calls["n"] == call:
                raise Crash(name)
            return real(*a, **kw)

        setattr(obj, name, wrapper)


@pytest.fixture
def crash_on() -> CrashOn:
    return CrashOn()


@pytest.fixture
def events():
    """events(reports, host=0): (intent_seq, kind name, final) per report of ``host``."""

    def of(reports, host: int = 0) -> list[tuple[int, str, int]]:
        rep = reports.get(host, [])
        return [(int(r["intent_seq"]), ReportKind(r["kind"]).name, int(r["final"])) for r in rep]

    return of


@pytest.fixture
def venue_orders():
    """venue_orders(engine): (client id, side, qty, state) of every order the paper venue
    received, in arrival order."""

    def rows(e: ExecutionEngine) -> list[tuple]:
        return e.venue._conn.execute(
            "SELECT client_id, side, qty, state FROM orders ORDER BY rowid"
        ).fetchall()

    return rows


class JournalRows:
    """What a journal stored, read with SQL (questions the product never asks it)."""

    @staticmethod
    def order(j: Journal, client_order_id: str) -> SimpleNamespace | None:
        row = j._conn.execute(
            "SELECT state, reason, reason_text, filled_qty FROM orders WHERE client_order_id = ?",
            (client_order_id,),
        ).fetchone()
        if row is None:
            return None
        state, reason, text, filled = row
        return SimpleNamespace(
            state=OrderState(state), reason=reason, reason_text=text, filled_qty=filled
        )

    @staticmethod
    def state_counts(j: Journal) -> collections.Counter[OrderState]:
        rows = j._conn.execute("SELECT state, count(*) FROM orders GROUP BY state")
        return collections.Counter({OrderState(s): n for s, n in rows})

    @staticmethod
    def runs(j: Journal) -> list[SimpleNamespace]:
        rows = j._conn.execute("SELECT run_id, stopped_ns, drained FROM runs ORDER BY run_id")
        return [
            SimpleNamespace(run_id=r, stopped_ns=s, drained=json.loads(d) if d else None)
            for r, s, d in rows
        ]


@pytest.fixture
def journal_rows() -> type[JournalRows]:
    return JournalRows


@pytest.fixture
def intent():
    """intent(journal, seq, host=0, agent=0, lots=10, side=1, ...): an intent order of
    ``lots`` lots of 0.1, a MARKET order in symbol 0 unless told otherwise."""

    def make(
        j: Journal,
        seq: int,
        host: int = 0,
        agent: int = 0,
        lots: int = 10,
        side: int = 1,
        *,
        population: int = 0,
        symbol: int = 0,
        lot: float = 0.1,
    ) -> IntentOrder:
        return IntentOrder(
            j.intent_client_id(host, seq), host=host, population=population, agent=agent,
            intent_seq=seq, symbol=symbol, side=side, order_type=OrderType.MARKET,
            qty_lots=lots, lot=lot, created_ns=1,
        )  # fmt: skip

    return make


@pytest.fixture
def fill():
    """fill(order, lots, price=100.0, liquidity="internal", venue_order_id=None,
    venue_fill_id=None): a fill of ``lots`` of intent order ``order``."""

    def make(o: IntentOrder, lots: int, price: float = 100.0, **kw) -> Fill:
        return Fill(
            o.client_order_id, o.host, o.population, o.agent, o.symbol, o.side, lots, o.lot,
            price, 0.0, kw.pop("liquidity", "internal"), 1, **kw,
        )  # fmt: skip

    return make


@pytest.fixture
def check_invariants():
    """check_invariants(engine, published=None): no intent journaled twice in the epoch,
    every published intent (per host, seqs 0..n-1) journaled, and the engine's positions
    and portfolio equal to those rebuilt from the journal's fills."""

    def check(e: ExecutionEngine, published: dict[int, int] | None = None) -> None:
        j = e.journal
        dupes = j._conn.execute(
            "SELECT host, intent_seq, count(*) FROM orders WHERE epoch = ? "
            "GROUP BY host, intent_seq HAVING count(*) > 1",
            (j.epoch,),
        ).fetchall()
        assert dupes == []
        for h, n in (published or {}).items():
            seqs = j.reads.journaled_seqs(j.epoch, h, range(n))
            assert seqs == set(range(n)), f"host {h}: missing {set(range(n)) - seqs}"
        assert e.positions() == j.reads.positions_from_fills()
        rebuilt = Portfolio()
        rebuilt.apply_all(j.reads.fills())
        assert rebuilt._pos == e.portfolio._pos  # bit-identical, every agent and symbol

    return check


class Clock:
    """A clock stepped by hand: ``clock.t`` nanoseconds, ``clock.advance(seconds)``."""

    def __init__(self) -> None:
        self.t = 10**18

    def __call__(self) -> int:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += int(seconds * 1e9)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def venue_positions():
    """venue_positions(engine): signed quantity per symbol index that the paper venue's own
    file says it filled (the account's position at the venue)."""

    def of(e: ExecutionEngine) -> dict[int, float]:
        rows = e.venue._conn.execute(
            "SELECT o.symbol, SUM(o.side * f.qty) FROM fills f JOIN orders o USING (client_id) "
            "GROUP BY o.symbol"
        )
        return {s: q for s, q in rows if abs(q) > 1e-9}

    return of


@pytest.fixture
def agents_sum():
    """agents_sum(engine): per symbol index, the sum of every agent's position."""

    def of(e: ExecutionEngine) -> dict[int, float]:
        out: dict[int, float] = {}
        for (_h, _p, _a, s), q in e.positions().items():
            out[s] = out.get(s, 0.0) + q
        return {s: q for s, q in out.items() if abs(q) > 1e-9}

    return of
