import re

import numpy as np
import pytest

from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason, ReportKind, Side
from appliance.trading.engine import EngineConfig, ExecutionEngine
from appliance.trading.journal import Journal, LayoutMismatch
from appliance.trading.portfolio import Portfolio
from appliance.trading.risk import RiskLimits
from appliance.venues.base import OrderRequest, OrderStatus
from appliance.venues.paper import PaperVenue
from tests.exec_factories import intents, quotes, trade

S, K, R = OrderState, ReportKind, RejectReason
SYMS = ["BTC/USD", "ETH/USD", "SOL/USD"]
LIMITS = {
    "BTC/USD": RiskLimits(10.0, 1e6),
    "ETH/USD": RiskLimits(100.0, 1e5),
    "SOL/USD": RiskLimits(100.0, 1e5),
}


class Crash(BaseException):
    """A SIGKILL stand-in: not an Exception, so nothing in the engine catches it."""


def make(tmp_path, epoch="queues-1", *, quote=True, **cfg) -> ExecutionEngine:
    journal = Journal(tmp_path / "journal.sqlite", synchronous="NORMAL")
    venue = PaperVenue(tmp_path / "venue.sqlite", len(SYMS), lot_size=0.001, taker_bps=10,
                       maker_bps=2, synchronous="NORMAL")  # fmt: skip
    e = ExecutionEngine(SYMS, LIMITS, journal, venue, EngineConfig(lot_size=0.001, **cfg))
    e.summary = e.recover(epoch)
    if quote:
        e.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=50.0))
    return e


def events(reports, host=0):
    rep = reports.get(host, [])
    return [(int(r["intent_seq"]), K(r["kind"]).name, int(r["final"])) for r in rep]


def venue_orders(e):
    return e.venue._conn.execute(
        "SELECT client_id, side, qty, state FROM orders ORDER BY rowid"
    ).fetchall()


def check_invariants(e, published: dict[int, int] | None = None):
    j = e.journal
    dupes = j._conn.execute(
        "SELECT host, intent_seq, count(*) FROM orders WHERE epoch = ? "
        "GROUP BY host, intent_seq HAVING count(*) > 1",
        (j.epoch,),
    ).fetchall()
    assert dupes == []
    if published:
        for h, n in published.items():
            seqs = j.journaled_seqs(h, range(n))
            assert seqs == set(range(n)), f"host {h}: missing {set(range(n)) - seqs}"
    assert e.positions() == j.positions_from_fills()
    marks = e.quotes.mid
    assert Portfolio.from_fills(j.fills()).by_key(marks) == e.portfolio.by_key(marks)


def test_crossing_is_internal_and_only_net_goes_out(tmp_path):
    e = make(tmp_path)
    rep = e.process(intents([
        {"agent": 0, "qty": 3.0},
        {"agent": 1, "qty": 1.0, "side": Side.SELL},
    ]))  # fmt: skip
    assert events(rep) == [
        (0, "ACK", 0),
        (0, "FILL", 0),
        (1, "ACK", 0),
        (1, "FILL", 1),
        (0, "FILL", 1),
    ]
    fills = rep[0][rep[0]["kind"] == K.FILL]
    assert fills["fill_qty"].tolist() == [1.0, 1.0, 2.0]
    assert fills["fill_price"].tolist() == [100.5, 100.5, 101.0]  # mid, mid, ask
    assert fills["fee"][:2].tolist() == [0.0, 0.0]
    assert fills["fee"][2] == pytest.approx(2.0 * 101.0 * 10 / 1e4)
    assert (rep[0]["side"] == [1, 1, -1, -1, 1]).all() and (rep[0]["seq"] == 0).all()
    [(_cid, side, qty, state)] = venue_orders(e)
    assert (side, qty, state) == (1, 2.0, S.FILLED)
    assert e.positions() == {(0, 0, 0, 0): 3.0, (0, 0, 1, 0): -1.0}
    counts = e.journal.state_counts()
    assert counts[S.FILLED] == 2 and sum(counts.values()) == 2
    check_invariants(e, {0: 2})


def test_internal_fee(tmp_path):
    e = make(tmp_path, internal_fee_bps=1.0)
    rep = e.process(intents([{"agent": 0}, {"agent": 1, "side": Side.SELL}]))
    fees = rep[0][rep[0]["kind"] == K.FILL]["fee"]
    assert fees.tolist() == pytest.approx([100.5e-4, 100.5e-4])
    assert venue_orders(e) == []


def test_market_partial_fill_cancels_remainder(tmp_path):
    e = make(tmp_path)
    rep = e.process(intents([{"symbol": 1, "qty": 60.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 0), (0, "CANCEL", 1)]
    assert rep[0]["fill_qty"][1] == 50.0
    o = e.journal.order(e.journal.intent_client_id(0, 0))
    assert o.state is S.CANCELED and o.filled_qty == 50.0
    check_invariants(e)


def test_limit_rests_counts_as_exposure_then_fills_on_trade_through(tmp_path):
    e = make(tmp_path)
    rep = e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 99.0, "qty": 2.0}]))
    assert events(rep) == [(0, "ACK", 0)] and e.open_orders == 1
    # 2 resting + 8.5 > max_position 10: the open order counts
    rep = e.process(intents([{"seq": 1, "qty": 8.5}, {"seq": 2, "qty": 8.0}]))
    assert events(rep) == [(1, "REJECT", 1), (2, "ACK", 0), (2, "FILL", 1)]
    assert rep[0]["reason"][0] == R.MAX_POSITION
    assert e.on_ticks(trade(0, 99.5, 99.0, 100.0)) == {}  # not reached
    rep = e.on_ticks(trade(0, 98.9, 98.5, 99.5))
    assert events(rep) == [(0, "FILL", 1)]
    assert rep[0]["fill_price"][0] == 99.0
    assert rep[0]["fee"][0] == pytest.approx(2.0 * 99.0 * 2 / 1e4)
    assert e.open_orders == 0 and e.positions() == {(0, 0, 0, 0): 10.0}
    check_invariants(e, {0: 3})


def test_rejects_carry_reasons(tmp_path):
    e = make(tmp_path)
    rep = e.process(intents([
        {"symbol": 9},
        {"qty": 0.0},
        {"qty": 11.0},                                   # > max_position 10
        {"symbol": 1, "qty": 99.0},                      # 99 * 11 < 1e5 but ...
        {"symbol": 1, "order_type": OrderType.LIMIT, "limit_price": 2000.0, "qty": 60.0},
        {"symbol": 2},                                   # no quote for SOL
    ]))  # fmt: skip
    reasons = rep[0]["reason"].tolist()
    kinds = rep[0]["kind"].tolist()
    rejected = [r for r, k in zip(reasons, kinds, strict=True) if k == K.REJECT]
    assert rejected == [R.UNKNOWN_SYMBOL, R.BAD_ORDER, R.MAX_POSITION, R.MAX_NOTIONAL,
                        R.NO_MARKET]  # fmt: skip
    o = e.journal.order(e.journal.intent_client_id(0, 4))
    assert o.state is S.REJECTED and o.reason == R.MAX_NOTIONAL and "MAX_NOTIONAL" in o.reason_text
    assert e.status()["rejects"] == {
        "MAX_POSITION": 1, "MAX_NOTIONAL": 1, "NO_MARKET": 1, "UNKNOWN_SYMBOL": 1, "BAD_ORDER": 1
    }  # fmt: skip
    check_invariants(e, {0: 6})


def test_venue_reject_is_reported(tmp_path):
    e = make(tmp_path)
    e.on_ticks(quotes(1, 10.0, 11.0, size=0.0))  # quoted, but no size
    rep = e.process(intents([{"symbol": 1}]))
    assert events(rep) == [(0, "REJECT", 1)] and rep[0]["reason"][0] == R.NO_LIQUIDITY
    assert e.journal.order(e.journal.intent_client_id(0, 0)).state is S.REJECTED


def test_halt_and_cancel_all(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    e.set_trading_state("halted")
    rep = e.process(intents([{"seq": 1}]))
    assert events(rep) == [(1, "REJECT", 1)] and rep[0]["reason"][0] == R.HALTED
    rep = e.cancel_all()
    assert events(rep) == [(0, "CANCEL", 1)] and e.venue.open_orders() == []
    assert e.status()["trading"] == "halted" and e.open_orders == 0


def test_duplicate_intents_skipped(tmp_path):
    e = make(tmp_path)
    batch = intents([{"seq": 0}, {"seq": 0, "host": 1}, {"seq": 0}])  # in-batch duplicate
    rep = e.process(batch)
    assert e.duplicates == 1 and len(rep[0]) == 2 and len(rep[1]) == 2
    assert e.process(batch) == {}  # re-delivered whole
    assert e.duplicates == 4 and e.intents_processed == 2
    rep = e.process(intents([{"seq": 1}, {"seq": 0, "host": 1}, {"seq": 1, "host": 1}]))
    assert sorted(rep) == [0, 1] and events(rep, 1)[0][0] == 1
    check_invariants(e, {0: 2, 1: 2})


def test_redelivery_across_restart_needs_the_same_epoch(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"seq": s} for s in range(5)]))
    e2 = make(tmp_path)  # the process died; the queues (epoch) survived
    assert e2.summary.last_intent_seq == {0: 4}
    rep = e2.process(intents([{"seq": s} for s in range(3, 7)]))
    # 5 and 6 are netted into one venue order: both acked, then the fill is split
    assert events(rep) == [(5, "ACK", 0), (6, "ACK", 0), (5, "FILL", 1), (6, "FILL", 1)]
    assert e2.duplicates == 2
    check_invariants(e2, {0: 7})
    e3 = make(tmp_path, epoch=None)  # queues recreated: seqs start again, a new scope
    rep = e3.process(intents([{"seq": 0}]))
    assert events(rep)[0] == (0, "ACK", 0)


def crash_on(obj, name: str, call: int):
    """Make obj.name raise Crash on its call-th call (1-based), pass through otherwise."""
    real = getattr(obj, name)
    calls = {"n": 0}

    def wrapper(*a, **kw):
        calls["n"] += 1
        if calls["n"] == call:
            raise Crash(name)
        return real(*a, **kw)

    setattr(obj, name, wrapper)


CRASH_BATCH = [
    {"agent": 0, "qty": 3.0},  # 1 internal, 2 venue
    {"agent": 1, "qty": 1.0, "side": Side.SELL},  # fully internal
    {"agent": 2, "order_type": OrderType.LIMIT, "limit_price": 90.0},  # rests
    {"agent": 3, "symbol": 1, "order_type": OrderType.LIMIT, "limit_price": 12.0},  # fills now
]


def test_crash_after_journaling_before_send(tmp_path):
    e = make(tmp_path)
    crash_on(e.venue, "submit", 1)
    with pytest.raises(Crash):
        e.process(intents(CRASH_BATCH))
    counts = e.journal.state_counts()  # journaled, nothing sent
    assert (counts[S.NEW], counts[S.PARTIALLY_FILLED], counts[S.FILLED]) == (2, 1, 1)
    del e

    e2 = make(tmp_path)
    s = e2.summary
    assert (s.venue_orders_checked, s.unsent_rejected, s.fills_applied) == (3, 3, 0)
    assert venue_orders(e2) == []  # nothing sent, and nothing resent
    assert events(s.reports) == [(0, "CANCEL", 1), (2, "REJECT", 1), (3, "REJECT", 1)]
    assert (s.reports[0]["reason"][1:] == R.VENUE).all()
    # the internal cross was journaled with the intents and stands
    assert e2.positions() == {(0, 0, 0, 0): 1.0, (0, 0, 1, 0): -1.0}
    assert e2.journal.state_counts()[S.NEW] == 0 and e2.open_orders == 0
    assert e2.process(intents(CRASH_BATCH)) == {}  # the re-delivered batch is known
    check_invariants(e2, {0: 4})


def test_crash_after_send_before_journaling_fills(tmp_path):
    e = make(tmp_path)
    crash_on(e.journal, "write", 2)  # commit #1 passes, commit #2 (acks, fills) dies
    with pytest.raises(Crash):
        e.process(intents(CRASH_BATCH))
    sent = venue_orders(e)
    assert len(sent) == 3
    del e

    e2 = make(tmp_path)
    s = e2.summary
    assert (s.unsent_rejected, s.fills_applied) == (0, 2)
    assert venue_orders(e2) == sent  # no order sent twice
    assert events(s.reports) == [
        (0, "FILL", 1), (2, "ACK", 0), (3, "ACK", 0), (3, "FILL", 1)
    ]  # fmt: skip
    assert e2.positions() == {(0, 0, 0, 0): 3.0, (0, 0, 1, 0): -1.0, (0, 0, 3, 1): 1.0}
    assert e2.open_orders == 1
    check_invariants(e2, {0: 4})

    n_fills = e2.journal.fill_count()
    e3 = make(tmp_path)  # reconcile again: nothing new
    assert e3.summary.fills_applied == 0 and e3.summary.reports == {}
    assert e3.reconcile() == {} and e3.journal.fill_count() == n_fills
    check_invariants(e3, {0: 4})


def test_resting_order_filled_while_execution_was_down(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 99.0, "qty": 2.0}]))
    venue = e.venue
    del e
    venue.on_ticks(trade(0, 98.0, 97.5, 98.5))  # the exchange keeps matching
    e2 = make(tmp_path)
    assert e2.summary.fills_applied == 1
    assert events(e2.summary.reports) == [(0, "FILL", 1)]
    assert e2.positions() == {(0, 0, 0, 0): 2.0}
    check_invariants(e2, {0: 1})


def test_crash_in_on_ticks_before_journaling_fill(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 99.0, "qty": 2.0}]))
    crash_on(e.journal, "write", 1)
    with pytest.raises(Crash):
        e.on_ticks(trade(0, 98.0, 97.5, 98.5))
    del e
    e2 = make(tmp_path)
    assert e2.summary.fills_applied == 1 and e2.positions() == {(0, 0, 0, 0): 2.0}
    check_invariants(e2, {0: 1})


def make_in_doubt(tmp_path):
    """An engine whose venue takes each order but loses the answer (a timeout), and the
    venue's real submit to restore."""
    e = make(tmp_path)
    real = e.venue.submit

    def flaky(order):
        real(order)  # it reached the venue, but the answer was lost
        raise ConnectionError("timeout")

    e.venue.submit = flaky
    return e, real


def test_submit_error_is_in_doubt_then_reconciled(tmp_path):
    e, real = make_in_doubt(tmp_path)
    rep = e.process(intents([{"qty": 1.0}]))
    assert rep == {} and e.status()["in_doubt"] == 1
    e.venue.submit = real
    rep = e.process(intents([{"seq": 1, "agent": 1, "qty": 1.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1), (1, "ACK", 0), (1, "FILL", 1)]
    assert e.status()["in_doubt"] == 0 and len(venue_orders(e)) == 2
    check_invariants(e, {0: 2})


def test_venue_duplicate_id_is_reconciled_not_rejected(tmp_path):
    e = make(tmp_path)
    # the engine's first venue order id is "<run>-v1": pretend it was already sent
    e.venue.submit(OrderRequest(f"{e.summary.run_id}-v1", 0, Side.BUY, OrderType.MARKET, 1.0))
    rep = e.process(intents([{"qty": 1.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1)]
    assert len(venue_orders(e)) == 1
    check_invariants(e)


def test_status_and_drained(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"qty": 1.0}]))
    e.on_ticks(quotes(0, 110.0, 111.0))
    st = e.status()
    assert st["fills"] == 1 and st["intents"] == 1 and st["open_orders"] == 0
    assert st["unrealized"] == pytest.approx(1.0 * (110.5 - 101.0))
    assert st["fees"] == pytest.approx(101.0 * 10 / 1e4)
    e.record_drained({0: 0})
    assert e.journal.runs()[-1]["drained"] == {0: 0}
    e.close()


def test_engine_needs_recover(tmp_path):
    j = Journal(tmp_path / "j.sqlite", synchronous="NORMAL")
    v = PaperVenue(tmp_path / "v.sqlite", 3, synchronous="NORMAL")
    e = ExecutionEngine(SYMS, LIMITS, j, v)
    with pytest.raises(RuntimeError, match="recover"):
        e.process(intents([{}]))


def backlog(queue: dict, consumed: dict, published: dict, fresh: list[dict]):
    """Intents published before ``fresh`` but not released from their queue."""
    rows = []
    for h in consumed:
        end = published[h] - sum(r["host"] == h for r in fresh)
        rows += [queue[h, s] for s in range(consumed[h], end)]
    return intents(rows)


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_with_crashes_keep_the_invariants(tmp_path, seed):
    rng = np.random.default_rng(seed)
    hosts = 3
    published = dict.fromkeys(range(hosts), 0)  # next seq per host queue
    consumed = dict.fromkeys(range(hosts), 0)  # queue tail: released after process returns
    queue: dict[tuple[int, int], dict] = {}
    crashes = 0
    e = make(tmp_path)
    mids = np.array([100.0, 10.0, 50.0])
    for step in range(60):
        mids *= np.exp(rng.normal(0, 0.002, 3))
        t = quotes([0, 1, 2], mids - 0.05, mids + 0.05, size=float(rng.uniform(0, 20)))
        if rng.random() < 0.5:
            t["kind"], t["last_price"] = 2, mids * (1 + rng.normal(0, 0.003, 3))
        e.on_ticks(t)
        rows = []
        for _ in range(int(rng.integers(1, 25))):
            h = int(rng.integers(hosts))
            limit = rng.random() < 0.3
            sym = int(rng.integers(3))
            rows.append({
                "host": h, "seq": published[h], "agent": int(rng.integers(4)), "symbol": sym,
                "side": int(rng.choice([-1, 1])), "qty": float(rng.integers(1, 3000)) / 1000,
                "order_type": OrderType.LIMIT if limit else OrderType.MARKET,
                "limit_price": float(mids[sym] * (1 + rng.normal(0, 0.002))) if limit else 0.0,
            })  # fmt: skip
            queue[h, published[h]] = rows[-1]
            published[h] += 1
        # deliver everything published but not yet released (re-delivery after a crash)
        batch = np.concatenate([backlog(queue, consumed, published, rows), intents(rows)])
        if rng.random() < 0.15:
            crash_on(*((e.venue, "submit") if rng.random() < 0.5 else (e.journal, "write")),
                     int(rng.integers(1, 3)))  # fmt: skip
        try:
            rep = e.process(batch)
        except Crash:
            crashes += 1
            e = make(tmp_path, quote=False)
            check_invariants(e)
            continue
        for h in range(hosts):
            consumed[h] = published[h]
        finals = {
            (h, int(r["intent_seq"])): 0 for h, a in rep.items() for r in a
        }  # every fresh intent got at least one report
        for h, a in rep.items():
            for r in a[a["final"] == 1]:
                finals[h, int(r["intent_seq"])] += 1
        for r in rows:
            n = finals[r["host"], r["seq"]]
            assert n == 1 if r["order_type"] == OrderType.MARKET else n <= 1
        if step % 20 == 19:
            check_invariants(e, published)
    assert crashes >= 3
    e = make(tmp_path)
    e.process(backlog(queue, consumed, published, []))  # what a crash on the last step left
    check_invariants(e, published)
    open_rows = e.journal.open_orders()
    assert all(o.order_type == OrderType.LIMIT for o in open_rows)
    assert len(open_rows) == len(e.venue.open_orders())


def test_from_config(tmp_path):
    from pathlib import Path

    from appliance.config import load_config
    from appliance.workers import compose

    cfg = load_config(Path(__file__).parents[2] / "config" / "dynamind.toml")
    cfg = cfg.model_copy(
        update={
            "journal_path": tmp_path / "var" / "journal.sqlite",
            "venue_state_path": tmp_path / "var" / "venue.sqlite",
        }
    )
    e = compose.execution_engine(cfg)
    assert e.recover().run_id == 1
    agents = [[h, p, pop.agents] for h, host in enumerate(cfg.hosts)
              for p, pop in enumerate(host.populations)]  # fmt: skip
    assert e.journal.last_layout() == {
        "symbols": [s.name for s in cfg.symbols],
        "lots": [s.lot_size for s in cfg.symbols],
        "agents": agents,
    }
    assert e.symbols == [s.name for s in cfg.symbols]
    assert e.lots.tolist() == [s.lot_size for s in cfg.symbols]
    first = cfg.symbols[0]
    assert e.risk.limits(first.name) == RiskLimits(first.max_position, first.max_order_notional)
    e.set_trading_state("halted")
    assert e.status()["trading"] == "halted"
    e.close()


def test_summary_is_one_log_line(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    line = str(make(tmp_path).summary)
    assert "\n" not in line and "1 open intents" in line and "last intent seqs {0: 0}" in line


def test_layout_change_with_open_positions_is_refused_before_writing(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"agent": 0, "qty": 1.0}]))  # long BTC/USD
    e.close()

    def restart(symbols=SYMS, lot=0.001, agents=None):
        j = Journal(tmp_path / "journal.sqlite", synchronous="NORMAL")
        v = PaperVenue(tmp_path / "venue.sqlite", len(symbols), lot_size=lot,
                       synchronous="NORMAL")  # fmt: skip
        limits = dict.fromkeys(symbols, RiskLimits(10.0, 1e6))
        return ExecutionEngine(symbols, limits, j, v, EngineConfig(lot_size=lot), agents=agents)

    runs = len(Journal(tmp_path / "journal.sqlite", readonly=True).runs())
    for kw, text in [
        ({"lot": 0.01}, "symbol BTC/USD (index 0): lot size 0.001 -> 0.01"),
        ({"symbols": ["ETH/USD", "BTC/USD", "SOL/USD"]}, "BTC/USD (index 0) is now index 1"),
        ({"symbols": ["ETH/USD", "SOL/USD"]}, "BTC/USD (index 0) is no longer configured"),
        ({"agents": {(0, 1): 3}}, "host 0 population 0 no longer exists"),
    ]:
        e = restart(**kw)
        with pytest.raises(LayoutMismatch, match=re.escape(text)):
            e.recover()  # before: replayed onto another symbol, or crashed in the portfolio
        e.close()
    assert len(Journal(tmp_path / "journal.sqlite", readonly=True).runs()) == runs  # untouched
    e = restart(symbols=[*SYMS, "DOGE/USD"], agents={(0, 0): 1})  # appending is fine
    e.recover()
    assert e.positions() == {(0, 0, 0, 0): 1.0}
    e.close()
    e = restart(agents={(0, 0): 1})  # the recorded agents are compared next time
    e.recover()
    e.close()
    with pytest.raises(LayoutMismatch, match=r"now has 0 agents|no longer exists"):
        restart(agents={(0, 0): 0, (0, 1): 1}).recover()


def test_venue_fill_ids_restarting_per_venue_file_are_not_dropped(tmp_path):
    e = make(tmp_path)
    e.process(intents([{"agent": 0, "qty": 1.0}]))  # venue fill P1 of order 1-v1
    e.close()
    (tmp_path / "venue.sqlite").unlink()  # venue state recreated: fill ids start at P1 again
    e = make(tmp_path, epoch="queues-2")
    rep = e.process(intents([{"agent": 1, "qty": 2.0}]))  # its fill is P1 of order 2-v2
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1)]
    assert e.positions() == {(0, 0, 0, 0): 1.0, (0, 0, 1, 0): 2.0} and e.open_orders == 0
    check_invariants(e)


def test_terminal_venue_status_with_other_fills_is_loud_and_closed(tmp_path, caplog):
    e = make(tmp_path)
    e.process(intents([{"qty": 2.0, "order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    (cid,) = [c for c, *_ in venue_orders(e)]
    real = e.venue.fetch_order
    # the venue says it filled (its fills lost to us): before, the order stayed open forever
    e.venue.fetch_order = lambda c: OrderStatus(c, S.FILLED, 2.0) if c == cid else real(c)
    with caplog.at_level("ERROR"):
        rep = e.reconcile()
    assert events(rep) == [(0, "CANCEL", 1)] and e.open_orders == 0
    assert e.status()["fill_mismatches"] == 1
    assert "FILL MISMATCH" in caplog.text and "2.0 filled, the journal holds 0.0" in caplog.text
    assert e.journal.venue_order(cid).state is S.CANCELED
    check_invariants(e)


def test_sell_limit_far_below_the_bid_is_valued_at_the_bid(tmp_path):
    e = make(tmp_path)  # ETH/USD: bid 10
    e.risk.set_limits({**LIMITS, "ETH/USD": RiskLimits(100.0, 500.0)})
    lim = {"symbol": 1, "side": Side.SELL, "order_type": OrderType.LIMIT}
    rep = e.process(intents([
        {**lim, "qty": 60.0, "limit_price": 0.01},  # 0.6 at its limit, 600 at the bid
        {**lim, "qty": 40.0, "limit_price": 0.01, "agent": 1},  # 400 at the bid: passes
        {**lim, "qty": 10.0, "limit_price": 60.0, "agent": 2},  # above the bid: its limit
        {"symbol": 1, "qty": 10.0, "order_type": OrderType.LIMIT, "limit_price": 60.0,
         "agent": 3},  # buy: valued at its limit (it may rest and fill there)
    ]))  # fmt: skip
    reasons = {int(r["intent_seq"]): R(r["reason"]) for r in rep[0] if r["kind"] == K.REJECT}
    assert reasons == {0: R.MAX_NOTIONAL, 2: R.MAX_NOTIONAL, 3: R.MAX_NOTIONAL}


def test_in_doubt_orders_are_settled_from_on_ticks(tmp_path):
    e, real = make_in_doubt(tmp_path)
    assert e.process(intents([{"qty": 1.0}])) == {} and e.status()["in_doubt"] == 1
    e.venue.submit = real
    rep = e.on_ticks(quotes(0, 100.0, 101.0))  # no intents arrive, no resting fill
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1)] and e.status()["in_doubt"] == 0
    check_invariants(e, {0: 1})
