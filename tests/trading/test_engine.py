"""The pipeline: validate, risk, net, journal, send, report (one engine, no restarts)."""

import pytest

from appliance.model.enums import TradingState
from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason, ReportKind, Side
from appliance.trading.risk import RiskLimits
from appliance.venues.base import OrderRequest, OrderStatus

S, K, R = OrderState, ReportKind, RejectReason


def test_crossing_is_internal_and_only_net_goes_out(
    make_engine, intents, events, venue_orders, journal_rows, check_invariants
):
    e = make_engine()
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
    assert journal_rows.state_counts(e.journal) == {S.FILLED: 2}
    check_invariants(e, {0: 2})


def test_internal_fee(make_engine, intents, venue_orders):
    e = make_engine(internal_fee_bps=1.0)
    rep = e.process(intents([{"agent": 0}, {"agent": 1, "side": Side.SELL}]))
    fees = rep[0][rep[0]["kind"] == K.FILL]["fee"]
    assert fees.tolist() == pytest.approx([100.5e-4, 100.5e-4])
    assert venue_orders(e) == []


def test_market_partial_fill_cancels_remainder(
    make_engine, intents, events, journal_rows, check_invariants
):
    e = make_engine()
    rep = e.process(intents([{"symbol": 1, "qty": 60.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 0), (0, "CANCEL", 1)]
    assert rep[0]["fill_qty"][1] == 50.0
    o = journal_rows.order(e.journal, e.journal.intent_client_id(0, 0))
    assert o.state is S.CANCELED and o.filled_qty == 50.0
    # the end says why, in the journal and to the agent
    assert o.reason == R.NO_LIQUIDITY and o.reason_text == "IOC remainder beyond quoted size"
    assert rep[0]["reason"][2] == R.NO_LIQUIDITY
    check_invariants(e)


def test_limit_rests_counts_as_exposure_then_fills_on_trade_through(
    make_engine, intents, trade, events, check_invariants
):
    e = make_engine()
    rep = e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 99.0, "qty": 2.0}]))
    assert events(rep) == [(0, "ACK", 0)] and e.open_orders == 1
    assert e.book.exposure((0, 0, 0, 0)) == (2000, 0)  # lots of 0.001
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
    assert e.book.exposure((0, 0, 0, 0)) == (0, 0)
    check_invariants(e, {0: 3})


def test_rejects_carry_reasons(make_engine, intents, journal_rows, check_invariants):
    e = make_engine()
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
    o = journal_rows.order(e.journal, e.journal.intent_client_id(0, 4))
    assert o.state is S.REJECTED and o.reason == R.MAX_NOTIONAL and "MAX_NOTIONAL" in o.reason_text
    assert e.status().rejects == {
        "MAX_POSITION": 1, "MAX_NOTIONAL": 1, "NO_MARKET": 1, "UNKNOWN_SYMBOL": 1, "BAD_ORDER": 1
    }  # fmt: skip
    check_invariants(e, {0: 6})


def test_venue_reject_is_reported(make_engine, intents, quotes, events, journal_rows):
    e = make_engine()
    e.on_ticks(quotes(1, 10.0, 11.0, size=0.0))  # quoted, but no size
    rep = e.process(intents([{"symbol": 1}]))
    assert events(rep) == [(0, "REJECT", 1)] and rep[0]["reason"][0] == R.NO_LIQUIDITY
    assert journal_rows.order(e.journal, e.journal.intent_client_id(0, 0)).state is S.REJECTED


def test_halt_and_cancel_all(make_engine, intents, events):
    e = make_engine()
    e.process(intents([{"order_type": OrderType.LIMIT, "limit_price": 90.0}]))
    rep = e.set_trading_state("halted", "operator", "test")  # halting cancels resting orders
    assert events(rep) == [(0, "CANCEL", 1)] and e.venue.open_orders() == []
    rep = e.process(intents([{"seq": 1}]))
    assert events(rep) == [(1, "REJECT", 1)] and rep[0]["reason"][0] == R.HALTED
    assert e.cancel_all() == {}
    assert e.status().trading == "halted" and e.open_orders == 0
    assert e.status().trading_why == "test (operator)"


def test_every_cancelled_order_says_why(make_engine, intents, events, journal_rows, quotes):
    """Agent cancels, trading-state cancels and venue cancels each name their cause, in
    the journal (intent and venue order) and in the agent's report."""
    e = make_engine()
    limit = {"order_type": OrderType.LIMIT, "limit_price": 90.0}
    e.process(intents([{**limit, "agent": 0}, {**limit, "agent": 1, "seq": 1}]))
    rep = e.process(intents([{"order_type": OrderType.CANCEL, "qty": 0.0, "seq": 2}]))
    assert events(rep) == [(0, "CANCEL", 1), (2, "ACK", 1)]
    assert rep[0]["reason"][0] == R.REQUESTED
    o = journal_rows.order(e.journal, e.journal.intent_client_id(0, 0))
    assert (o.state, o.reason) == (S.CANCELED, R.REQUESTED) and "cancel intent" in o.reason_text
    for state, reason in (("reduce_only", R.REDUCE_ONLY), ("halted", R.HALTED)):
        seq = 3 if state == "reduce_only" else 4
        e.set_trading_state("active")
        e.process(intents([{**limit, "agent": 2, "seq": seq}]))
        rep = e.set_trading_state(state, "operator", "test")  # agent 1's rests too at first
        assert {(r["kind"], r["reason"]) for r in rep[0]} == {(K.CANCEL, reason)}
        o = journal_rows.order(e.journal, e.journal.intent_client_id(0, seq))
        assert o.reason == reason and o.reason_text == f"cancelled: trading {state} (test)"
    # an order the venue ended by itself, giving no reason (as an exchange's expiry): VENUE
    e.set_trading_state("active")
    e.process(intents([{**limit, "agent": 3, "seq": 5}]))
    [vo] = e.book.venue_orders.values()
    e.venue.cancel(vo.client_order_id)
    e.venue.ended = lambda: [OrderStatus(vo.client_order_id, S.CANCELED)]
    rep = e.on_ticks(quotes([0], [100.0], [101.0], size=50.0))
    assert [(r["kind"], r["reason"]) for r in rep[0]] == [(K.CANCEL, R.VENUE)]
    unexplained = e.journal._conn.execute(
        "SELECT count(*) FROM orders WHERE state IN (?, ?) AND reason = 0",
        (int(S.CANCELED), int(S.REJECTED)),
    ).fetchone()[0]
    assert unexplained == 0


def test_reduce_only_lets_reducing_intents_through_only(
    make_engine, intents, events, check_invariants
):
    e = make_engine()
    e.process(intents([{"agent": 0, "qty": 2.0}, {"agent": 1, "qty": 1.0, "side": Side.SELL}]))
    assert e.positions() == {(0, 0, 0, 0): 2.0, (0, 0, 1, 0): -1.0}
    e.set_trading_state(TradingState.REDUCE_ONLY)
    rep = e.process(intents([
        {"seq": 2, "agent": 0, "qty": 1.0},                    # long buys more: refused
        {"seq": 3, "agent": 0, "qty": 1.5, "side": Side.SELL},  # long sells part: passes
        {"seq": 4, "agent": 0, "qty": 1.0, "side": Side.SELL},  # would flip short: refused
        {"seq": 5, "agent": 1, "qty": 1.0},                    # short buys back: passes
        {"seq": 6, "agent": 2, "qty": 1.0, "side": Side.SELL},  # flat opens: refused
    ]))  # fmt: skip
    rejected = {int(r["intent_seq"]): R(r["reason"]) for r in rep[0] if r["kind"] == K.REJECT}
    assert rejected == {2: R.REDUCE_ONLY, 4: R.REDUCE_ONLY, 6: R.REDUCE_ONLY}
    assert sorted(s for s, kind, final in events(rep) if kind == "FILL" and final) == [3, 5]
    assert e.positions() == {(0, 0, 0, 0): 0.5}
    assert e.status().trading == "reduce_only"
    check_invariants(e, {0: 7})


def test_duplicate_intents_skipped(make_engine, intents, events, check_invariants):
    e = make_engine()
    batch = intents([{"seq": 0}, {"seq": 0, "host": 1}, {"seq": 0}])  # in-batch duplicate
    rep = e.process(batch)
    assert e.duplicates == 1 and len(rep[0]) == 2 and len(rep[1]) == 2
    assert e.process(batch) == {}  # re-delivered whole
    assert e.duplicates == 4 and e.status().intents == 2
    rep = e.process(intents([{"seq": 1}, {"seq": 0, "host": 1}, {"seq": 1, "host": 1}]))
    assert sorted(rep) == [0, 1] and events(rep, 1)[0][0] == 1
    check_invariants(e, {0: 2, 1: 2})


def test_venue_duplicate_id_is_reconciled_not_rejected(
    make_engine, intents, events, venue_orders, check_invariants
):
    e = make_engine()
    # the engine's first venue order id is "<run>-v1": pretend it was already sent
    e.venue.submit(OrderRequest(f"{e.summary.run_id}-v1", 0, Side.BUY, OrderType.MARKET, 1.0))
    rep = e.process(intents([{"qty": 1.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 1)]
    assert len(venue_orders(e)) == 1
    check_invariants(e)


def test_status_and_drained(make_engine, intents, quotes, journal_rows):
    e = make_engine()
    e.process(intents([{"qty": 1.0}]))
    e.on_ticks(quotes(0, 110.0, 111.0))
    st = e.status()
    assert st.fills == 1 and st.intents == 1 and st.open_orders == 0
    assert st.unrealized == pytest.approx(1.0 * (110.5 - 101.0))
    assert st.fees == pytest.approx(101.0 * 10 / 1e4)
    assert st.unknown_fills == 0 and st.in_doubt == 0
    e.record_drained({0: 0})
    assert journal_rows.runs(e.journal)[-1].drained == {"0": 0}
    e.close()


def test_engine_needs_recover(make_engine, intents):
    e = make_engine(recover=False)
    with pytest.raises(RuntimeError, match="recover"):
        e.process(intents([{}]))
    e.recover()
    with pytest.raises(RuntimeError, match="once"):
        e.recover()


def test_sell_limit_far_below_the_bid_is_valued_at_the_bid(make_engine, intents):
    e = make_engine()  # ETH/USD: bid 10
    e.risk.set_limits(dict.fromkeys(e.symbols, RiskLimits(100.0, 500.0)))
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


def test_each_limit_rejects_with_its_reason_in_the_report_and_the_journal(
    make_engine, intents, journal_rows
):
    e = make_engine()  # BTC/USD 100/101
    btc = RiskLimits(10.0, 1e6, max_order_qty=3.0, price_band_bps=100.0, max_open_orders=2)
    e.risk.set_limits({**{s: e.risk.limits(s) for s in e.symbols}, "BTC/USD": btc})
    lim = {"order_type": OrderType.LIMIT}
    rep = e.process(intents([
        {"qty": 3.5},                                          # MAX_ORDER_QTY
        {**lim, "limit_price": 90.0},                          # 10% below the mid
        {**lim, "limit_price": 100.0, "agent": 1},             # rests: 1 open
        {**lim, "limit_price": 99.9, "agent": 1},              # 2 open
        {**lim, "limit_price": 99.8, "agent": 1},              # a third: MAX_OPEN_ORDERS
    ]))  # fmt: skip
    got = {int(r["intent_seq"]): R(r["reason"]) for r in rep[0] if r["kind"] == K.REJECT}
    assert got == {0: R.MAX_ORDER_QTY, 1: R.PRICE_BAND, 4: R.MAX_OPEN_ORDERS}
    for seq, reason in got.items():
        o = journal_rows.order(e.journal, e.journal.intent_client_id(0, seq))
        assert o.state is S.REJECTED and o.reason == reason and reason.name in o.reason_text
