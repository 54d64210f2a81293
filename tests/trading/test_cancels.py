"""CANCEL intents: what they withdraw, how they are answered and journaled, crashes."""

import pytest

from appliance.model.enums import TradingState
from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason, Side

S, R = OrderState, RejectReason
LIMIT = {"order_type": OrderType.LIMIT, "qty": 1.0}
CANCEL = {"order_type": OrderType.CANCEL, "qty": 0.0}


def resting(e):
    """(client id, side, limit) of the orders resting at the paper venue."""
    rows = e.venue._conn.execute(
        "SELECT client_id, side, limit_price FROM orders WHERE state IN (3, 4) ORDER BY rowid"
    )
    return [tuple(r) for r in rows]


def test_cancel_withdraws_earlier_resting_orders_of_its_agent_symbol_and_side(
    make_engine, intents, events, journal_rows, check_invariants
):
    e = make_engine()
    e.process(intents([
        {**LIMIT, "seq": 0, "limit_price": 99.0},
        {**LIMIT, "seq": 1, "limit_price": 98.0},
        {**LIMIT, "seq": 2, "limit_price": 102.0, "side": Side.SELL},  # other side
        {**LIMIT, "seq": 3, "limit_price": 99.0, "agent": 1},          # other agent
        {**LIMIT, "seq": 4, "symbol": 1, "limit_price": 9.0},          # other symbol
    ]))  # fmt: skip
    assert len(resting(e)) == 5
    rep = e.process(intents([{**CANCEL, "seq": 5}]))
    assert events(rep) == [(0, "CANCEL", 1), (1, "CANCEL", 1), (5, "ACK", 1)]
    assert [(side, px) for _, side, px in resting(e)] == [(-1, 102.0), (1, 99.0), (1, 9.0)]
    j = e.journal
    done = journal_rows.order(j, j.intent_client_id(0, 5))
    assert done.state is S.DONE and done.reason == 0 and "2 order(s)" in done.reason_text
    for seq in (0, 1):
        o = journal_rows.order(j, j.intent_client_id(0, seq))
        assert o.state is S.CANCELED and "cancel intent" in o.reason_text
    assert e.open_orders == 3
    check_invariants(e, {0: 6})


def test_nothing_to_cancel_is_still_one_final_ack(make_engine, intents, events, journal_rows):
    e = make_engine()
    rep = e.process(intents([{**CANCEL, "side": Side.SELL}]))
    assert events(rep) == [(0, "ACK", 1)] and rep[0]["reason"][0] == 0
    assert journal_rows.order(e.journal, e.journal.intent_client_id(0, 0)).state is S.DONE
    assert e.open_orders == 0


def test_cancel_keeps_what_filled(make_engine, intents, events, check_invariants):
    e = make_engine()  # ETH/USD 10/11, size 50: a buy of 60 at 11 takes 50, 10 rest
    rep = e.process(intents([{**LIMIT, "symbol": 1, "qty": 60.0, "limit_price": 11.0}]))
    assert events(rep) == [(0, "ACK", 0), (0, "FILL", 0)] and rep[0]["fill_qty"][1] == 50.0
    rep = e.process(intents([{**CANCEL, "seq": 1, "symbol": 1}]))
    assert events(rep) == [(0, "CANCEL", 1), (1, "ACK", 1)]
    assert e.positions() == {(0, 0, 0, 1): 50.0} and resting(e) == []
    check_invariants(e, {0: 2})


def test_cancel_only_reaches_back_not_forward_in_its_batch(make_engine, intents, events):
    e = make_engine()
    rep = e.process(intents([
        {**LIMIT, "seq": 0, "limit_price": 99.0},
        {**CANCEL, "seq": 1},
        {**LIMIT, "seq": 2, "limit_price": 98.0},
    ]))  # fmt: skip
    assert events(rep) == [(0, "ACK", 0), (2, "ACK", 0), (0, "CANCEL", 1), (1, "ACK", 1)]
    assert [px for _, _, px in resting(e)] == [98.0]


def test_cancel_passes_in_every_trading_state(make_engine, intents, events):
    e = make_engine()
    e.risk.set_limits({s: e.risk.limits(s) for s in e.symbols})
    for i, state in enumerate((TradingState.HALTED, TradingState.REDUCE_ONLY)):
        e.set_trading_state(state, "test", "cancels pass")
        rep = e.process(intents([{**CANCEL, "seq": i}]))
        assert events(rep) == [(i, "ACK", 1)]


def test_malformed_cancels_are_rejected(make_engine, intents):
    e = make_engine()
    rep = e.process(intents([{**CANCEL, "side": 0}, {**CANCEL, "seq": 1, "symbol": 9}]))
    assert rep[0]["reason"].tolist() == [R.BAD_ORDER, R.UNKNOWN_SYMBOL]
    assert rep[0]["final"].tolist() == [1, 1]


def test_a_venue_that_cannot_cancel_rejects_the_cancel_and_the_quote_stays(
    make_engine, intents, events, journal_rows
):
    e = make_engine()
    e.process(intents([{**LIMIT, "limit_price": 99.0}]))

    def down(client_id):
        raise ConnectionError("venue unreachable")

    e.venue.cancel = down
    rep = e.process(intents([{**CANCEL, "seq": 1}]))
    assert events(rep) == [(1, "REJECT", 1)] and rep[0]["reason"][0] == R.VENUE
    assert (
        "venue unreachable"
        in journal_rows.order(e.journal, e.journal.intent_client_id(0, 1)).reason_text
    )
    assert e.open_orders == 1


def test_cancel_journaled_before_a_crash_is_carried_out_at_restart(
    make_engine, intents, crash_on, events, journal_rows, check_invariants
):
    e = make_engine()
    e.process(intents([{**LIMIT, "limit_price": 99.0}]))
    crash_on(e.venue, "cancel", 1)
    with pytest.raises(crash_on.Crash):
        e.process(intents([{**CANCEL, "seq": 1}]))
    assert journal_rows.order(e.journal, e.journal.intent_client_id(0, 1)).state is S.NEW
    del e
    e2 = make_engine()
    assert events(e2.summary.reports) == [(0, "CANCEL", 1), (1, "ACK", 1)]
    assert resting(e2) == [] and e2.open_orders == 0
    check_invariants(e2, {0: 2})


def test_a_cancel_reaches_quotes_of_an_earlier_appliance_lifetime(make_engine, intents, events):
    e = make_engine()
    e.process(intents([{**LIMIT, "seq": i, "limit_price": 99.0 - i} for i in range(5)]))
    del e
    e2 = make_engine(epoch="queues-2")  # new queues: seqs start at 0 again
    assert e2.open_orders == 5
    rep = e2.process(intents([{**CANCEL, "seq": 0}]))
    assert events(rep) == [(s, "CANCEL", 1) for s in range(5)] + [(0, "ACK", 1)]
    assert resting(e2) == []
