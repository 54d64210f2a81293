"""Recovery and reconciliation: restarts, crashes at every commit, in-doubt submits."""

import re

import numpy as np
import pytest

from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason, ReportKind, Side, TickKind
from appliance.trading.journal import Journal
from appliance.trading.layout_check import LayoutMismatch
from appliance.venues.base import OrderStatus
from appliance.venues.paper import PaperVenue

S, K, R = OrderState, ReportKind, RejectReason

CRASH_BATCH = [
    {"agent": 0, "qty": 3.0},  # 1 internal, 2 venue
    {"agent": 1, "qty": 1.0, "side": Side.SELL},  # fully internal
    {"agent": 2, "order_type": OrderType.LIMIT, "limit_price": 90.0},  # rests
    {"agent": 3, "symbol": 1, "order_type": OrderType.LIMIT, "limit_price": 12.0},  # fills now
]


def test_redelivery_across_restart_needs_the_same_epoch(
    make_engine, intents, events, check_invariants
):
    e = make_engine()
    e.process(intents([{"seq": s} for s in range(5)]))
    e2 = make_engine()  # the process died; the queues (epoch) survived
    assert e2.summary.last_intent_seq == {0: 4}
    rep = e2.process(intents([{"seq": s} for s in range(3, 7)]))
    # 5 and 6 are netted into one venue order: both acked, then the fill is split
    assert events(rep) == [(5, "ACK", 0), (6, "ACK", 0), (5, "FILL", 1), (6, "FILL", 1)]
    assert e2.duplicates == 2
    check_invariants(e2, {0: 7})
    e3 = make_engine(epoch=None)  # queues recreated: seqs start again, a new scope
    rep = e3.process(intents([{"seq": 0}]))
    assert events(rep)[0] == (0, "ACK", 0)


def test_crash_after_journaling_before_send(
    make_engine, intents, crash_on, events, venue_orders, journal_rows, check_invariants
):
    e = make_engine()
    crash_on(e.venue, "submit", 1)
    with pytest.raises(crash_on.Crash):
        e.process(intents(CRASH_BATCH))
    counts = journal_rows.state_counts(e.journal)  # journaled, nothing sent
    assert (counts[S.NEW], counts[S.PARTIALLY_FILLED], counts[S.FILLED]) == (2, 1, 1)
    del e

    e2 = make_engine()
    s = e2.summary
    assert (s.venue_orders_checked, s.unsent_rejected, s.fills_applied) == (3, 3, 0)
    assert venue_orders(e2) == []  # nothing sent, and nothing resent
    assert events(s.reports) == [(0, "CANCEL", 1), (2, "REJECT", 1), (3, "REJECT", 1)]
    assert (s.reports[0]["reason"][1:] == R.VENUE).all()
    # the internal cross was journaled with the intents and stands
    assert e2.positions() == {(0, 0, 0, 0): 1.0, (0, 0, 1, 0): -1.0}
    assert journal_rows.state_counts(e2.journal)[S.NEW] == 0 and e2.open_orders == 0
    assert e2.process(intents(CRASH_BATCH)) == {}  # the re-delivered batch is known
    check_invariants(e2, {0: 4})


def test_crash_after_send_before_journaling_fills(
    make_engine, intents, crash_on, events, venue_orders, check_invariants
):
    e = make_engine()
    crash_on(e.journal, "write", 2)  # commit #1 passes, commit #2 (acks, fills) dies
    with pytest.raises(crash_on.Crash):
        e.process(intents(CRASH_BATCH))
    sent = venue_orders(e)
    assert len(sent) == 3
    del e

    e2 = make_engine()
    s = e2.summary
    assert (s.unsent_rejected, s.fills_applied) == (0, 2)
    assert venue_orders(e2) == sent  # no order sent twice
    assert events(s.reports) == [
        (0, "FILL", 1), (2, "ACK", 0), (3, "ACK", 0), (3, "FILL", 1)
    ]  # fmt: skip
    assert e2.positions() == {(0, 0, 0, 0): 3.0, (0, 0, 1, 0): -1.0, (0, 0, 3, 1): 1.0}
    assert e2.open_orders == 1
    check_invariants(e2, {0: 4})

    n_fills = len(e2.journal.reads.fills())
    e3 = make_engine()  # reconcile again: nothing new
    assert e3.summary.fills_applied == 0 and e3.summary.reports == {}
    assert len(e3.journal.reads.fills()) == n_fills and e3.open_orders == 1
    check_invariants(e3, {0: 4})


def test_resting_order_filled_while_execution_was_down(
    make_engine, intents, trade, events, check_invariants
):
    e = make_engine()
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 99.0, "qty": 2.0}]))
    venue = e.venue
    del e
    venue.on_ticks(trade(0, 98.0, 97.5, 98.5))  # the exchange keeps matching
    e2 = make_engine()
    assert e2.summary.fills_applied == 1
    assert events(e2.summary.reports) == [(0, "FILL", 1)]
    assert e2.positions() == {(0, 0, 0, 0): 2.0}
    check_invariants(e2, {0: 1})


def test_crash_in_on_ticks_before_journaling_fill(
    make_engine, intents, trade, crash_on, check_invariants
):
    e = make_engine()
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 99.0, "qty": 2.0}]))
    crash_on(e.journal, "write", 1)
    with pytest.raises(crash_on.Crash):
        e.on_ticks(trade(0, 98.0, 97.5, 98.5))
    del e
    e2 = make_engine()
    assert e2.summary.fills_applied == 1 and e2.positions() == {(0, 0, 0, 0): 2.0}
    check_invariants(e2, {0: 1})


def test_open_intent_no_venue_order_covers_is_void_at_restart(
    make_engine, intents, events, journal_rows
):
    e = make_engine()
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    cid = e.journal.intent_client_id(0, 0)
    # the venue order is gone from the journal's view (closed), its intent still open
    e.journal._conn.execute("UPDATE venue_orders SET state = ?", (int(S.CANCELED),))
    e.close()
    e2 = make_engine(quote=False)
    assert events(e2.summary.reports) == [(0, "CANCEL", 1)] and e2.open_orders == 0
    o = journal_rows.order(e2.journal, cid)
    assert o.state is S.CANCELED and "no open venue order covers it" in o.reason_text


def make_in_doubt(make_engine):
    """An engine whose venue takes each order but loses the answer (a timeout), and the
    venue's real submit to restore."""
    e = make_engine()
    real = e.venue.submit

    def flaky(order):
        real(order)  # it reached the venue, but the answer was lost
        raise ConnectionError("timeout")

    e.venue.submit = flaky
    return e, real


def test_submit_error_is_in_doubt_then_reconciled(
    make_engine, intents, events, venue_orders, check_invariants
):
    e, real = make_in_doubt(make_engine)
    rep = e.process(intents([{"qty": 1.0}]))
    assert rep == {} and e.status().in_doubt == 1
    e.venue.submit = real
    rep = e.process(intents([{"seq": 1, "agent": 1, "qty": 1.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1), (1, "ACK", 0), (1, "FILL", 1)]
    assert e.status().in_doubt == 0 and len(venue_orders(e)) == 2
    check_invariants(e, {0: 2})


def test_in_doubt_orders_are_settled_from_on_ticks(
    make_engine, intents, quotes, events, check_invariants
):
    e, real = make_in_doubt(make_engine)
    assert e.process(intents([{"qty": 1.0}])) == {} and e.status().in_doubt == 1
    e.venue.submit = real
    rep = e.on_ticks(quotes(0, 100.0, 101.0))  # no intents arrive, no resting fill
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1)] and e.status().in_doubt == 0
    check_invariants(e, {0: 1})


def test_orphan_venue_order_is_cancelled_at_restart(make_engine, intents, tmp_path):
    e = make_engine()
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    e.close()
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)  # the journal is lost, not the venue
    e2 = make_engine(quote=False)
    assert e2.summary.orphans_canceled == 1 and e2.venue.open_orders() == []
    assert e2.summary.reports == {}  # nobody to tell: no agent is known for it


def test_summary_is_one_log_line(make_engine, intents):
    e = make_engine()
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    line = str(make_engine().summary)
    assert "\n" not in line and "1 open intents" in line and "last intent seqs {0: 0}" in line


def test_layout_change_with_open_positions_is_refused_before_writing(
    make_engine, intents, journal_rows
):
    e = make_engine()
    e.process(intents([{"agent": 0, "qty": 1.0}]))  # long BTC/USD
    e.close()
    syms, path = e.symbols, e.journal.path

    def runs() -> int:
        j = Journal(path, readonly=True)
        try:
            return len(journal_rows.runs(j))
        finally:
            j.close()

    before = runs()
    for kw, text in [
        ({"lot": 0.01}, "symbol BTC/USD (index 0): lot size 0.001 -> 0.01"),
        ({"symbols": ["ETH/USD", "BTC/USD", "SOL/USD"]}, "BTC/USD (index 0) is now index 1"),
        ({"symbols": ["ETH/USD", "SOL/USD"]}, "BTC/USD (index 0) is no longer configured"),
        ({"agents": {(0, 1): 3}}, "host 0 population 0 no longer exists"),
    ]:
        e = make_engine(recover=False, **kw)
        with pytest.raises(LayoutMismatch, match=re.escape(text)):
            e.recover()  # before: replayed onto another symbol, or crashed in the portfolio
        e.close()
    assert runs() == before  # untouched
    e = make_engine(symbols=[*syms, "DOGE/USD"], agents={(0, 0): 1}, quote=False)  # appended
    assert e.positions() == {(0, 0, 0, 0): 1.0}
    e.close()
    make_engine(agents={(0, 0): 1}, quote=False).close()  # recorded agents: compared next
    with pytest.raises(LayoutMismatch, match=r"now has 0 agents|no longer exists"):
        make_engine(agents={(0, 0): 0, (0, 1): 1})


def test_venue_fill_ids_restarting_per_venue_file_are_not_dropped(
    make_engine, intents, events, check_invariants, tmp_path
):
    e = make_engine()
    e.process(intents([{"agent": 0, "qty": 1.0}]))  # venue fill P1 of order 1-v1
    e.close()
    (tmp_path / "venue.sqlite").unlink()  # venue state recreated: fill ids start at P1 again
    e = make_engine(epoch="queues-2")
    rep = e.process(intents([{"agent": 1, "qty": 2.0}]))  # its fill is P1 of order 2-v2
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1)]
    assert e.positions() == {(0, 0, 0, 0): 1.0, (0, 0, 1, 0): 2.0} and e.open_orders == 0
    check_invariants(e)


def test_terminal_venue_status_with_other_fills_is_loud_and_closed(
    make_engine, intents, events, venue_orders, journal_rows, check_invariants, caplog,
    monkeypatch,
):  # fmt: skip
    e = make_engine()
    e.process(intents([{"qty": 2.0, "order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    (cid,) = [c for c, *_ in venue_orders(e)]
    e.close()
    real = PaperVenue.fetch_order

    def says_filled(venue, c):  # the venue's fills are lost to us
        return OrderStatus(c, S.FILLED, 2.0) if c == cid else real(venue, c)

    monkeypatch.setattr(PaperVenue, "fetch_order", says_filled)
    with caplog.at_level("ERROR"):
        e = make_engine(quote=False)  # before: the order stayed open forever
    assert events(e.summary.reports) == [(0, "CANCEL", 1)] and e.open_orders == 0
    assert e.status().fill_mismatches == 1
    assert "FILL MISMATCH" in caplog.text and "2.0 filled, the journal holds 0.0" in caplog.text
    assert e.journal.reads.venue_order(cid).state is S.CANCELED
    check_invariants(e)


def backlog(intents, queue: dict, consumed: dict, published: dict, fresh: list[dict]):
    """Intents published before ``fresh`` but not released from their queue."""
    rows = []
    for h in consumed:
        end = published[h] - sum(r["host"] == h for r in fresh)
        rows += [queue[h, s] for s in range(consumed[h], end)]
    return intents(rows)


def random_rows(rng, published: dict[int, int], mids: np.ndarray, hosts: int) -> list[dict]:
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
        published[h] += 1
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_with_crashes_keep_the_invariants(
    make_engine, intents, quotes, crash_on, check_invariants, seed
):
    rng = np.random.default_rng(seed)
    hosts = 3
    published = dict.fromkeys(range(hosts), 0)  # next seq per host queue
    consumed = dict.fromkeys(range(hosts), 0)  # queue tail: released after process returns
    queue: dict[tuple[int, int], dict] = {}
    crashes = 0
    e = make_engine()
    mids = np.array([100.0, 10.0, 50.0])
    for step in range(60):
        mids *= np.exp(rng.normal(0, 0.002, 3))
        t = quotes([0, 1, 2], mids - 0.05, mids + 0.05, size=float(rng.uniform(0, 20)))
        if rng.random() < 0.5:
            t["kind"], t["last_price"] = TickKind.TRADE, mids * (1 + rng.normal(0, 0.003, 3))
        e.on_ticks(t)
        rows = random_rows(rng, published, mids, hosts)
        queue.update({(r["host"], r["seq"]): r for r in rows})
        # deliver everything published but not yet released (re-delivery after a crash)
        batch = np.concatenate([backlog(intents, queue, consumed, published, rows), intents(rows)])
        if rng.random() < 0.15:
            crash_on(*((e.venue, "submit") if rng.random() < 0.5 else (e.journal, "write")),
                     int(rng.integers(1, 3)))  # fmt: skip
        try:
            rep = e.process(batch)
        except crash_on.Crash:
            crashes += 1
            e = make_engine(quote=False)
            check_invariants(e)
            continue
        consumed.update(published)
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
    e = make_engine()
    e.process(backlog(intents, queue, consumed, published, []))  # what the last step left
    check_invariants(e, published)
    open_rows = e.journal.reads.open_orders()
    assert all(o.order_type == OrderType.LIMIT for o in open_rows)
    assert len(open_rows) == len(e.venue.open_orders())
