"""Conflict resolution between agents: the net, priority and independent policies, LIMIT
intents crossing each other and resting quotes, and the account's position at the venue."""

import numpy as np
import pytest

from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason, ReportKind, Side
from appliance.trading.engine import Rules
from appliance.trading.routing import Policy

S, K, R = OrderState, ReportKind, RejectReason
LIMIT = {"order_type": OrderType.LIMIT, "qty": 1.0}


def rules(e, policy, **kw):
    return Rules(
        {s: e.risk.limits(s) for s in e.symbols}, policies=dict.fromkeys(e.symbols, policy), **kw
    )


def fills(rep, host=0):
    """(intent seq, qty, price, final) of every FILL report."""
    r = rep.get(host, [])
    return [(int(x["intent_seq"]), float(x["fill_qty"]), float(x["fill_price"]), int(x["final"]))
            for x in r if x["kind"] == K.FILL]  # fmt: skip


def test_limits_that_reach_each_other_cross_at_the_mid(make_engine, intents, venue_orders):
    e = make_engine()  # BTC/USD 100/101
    rep = e.process(intents([
        {**LIMIT, "agent": 0, "limit_price": 100.8},
        {**LIMIT, "agent": 1, "limit_price": 100.2, "side": Side.SELL, "qty": 2.0},
    ]))  # fmt: skip
    assert fills(rep) == [(0, 1.0, 100.5, 1), (1, 1.0, 100.5, 0)]
    [(_, side, qty, state)] = venue_orders(e)  # the seller's rest, alone at its limit
    assert (side, qty, state) == (-1, 1.0, S.ACCEPTED)


def test_limits_that_do_not_reach_each_other_rest_apart(make_engine, intents, venue_orders):
    e = make_engine()
    e.process(intents([
        {**LIMIT, "agent": 0, "limit_price": 100.2},
        {**LIMIT, "agent": 1, "limit_price": 100.6, "side": Side.SELL},
    ]))  # fmt: skip
    assert [r[1:] for r in venue_orders(e)] == [(1, 1.0, S.ACCEPTED), (-1, 1.0, S.ACCEPTED)]


def test_a_new_sell_takes_a_resting_bid_which_rests_again_with_its_rest(
    make_engine, intents, events, venue_orders, check_invariants
):
    e = make_engine()
    e.process(intents([{**LIMIT, "agent": 0, "qty": 3.0, "limit_price": 100.6}]))
    rep = e.process(intents([
        {**LIMIT, "seq": 1, "agent": 1, "limit_price": 100.4, "side": Side.SELL},
    ]))  # fmt: skip
    # the resting bid's agent gets a fill and no second ACK; the seller is done
    assert events(rep) == [(0, "FILL", 0), (1, "ACK", 0), (1, "FILL", 1)]
    assert fills(rep) == [(0, 1.0, 100.5, 0), (1, 1.0, 100.5, 1)]
    orders = venue_orders(e)
    assert [r[1:] for r in orders] == [(1, 3.0, S.CANCELED), (1, 2.0, S.ACCEPTED)]
    assert e.positions() == {(0, 0, 0, 0): 1.0, (0, 0, 1, 0): -1.0}
    assert e.book.exposure((0, 0, 0, 0)) == (2000, 0)  # 2 lots of 0.001 still open
    check_invariants(e, {0: 2})


def test_a_market_buy_takes_a_resting_offer_inside_the_spread_not_one_above_it(
    make_engine, intents, venue_orders
):
    e = make_engine()  # 100/101
    e.process(intents([
        {**LIMIT, "agent": 1, "limit_price": 100.7, "side": Side.SELL},
        {**LIMIT, "seq": 1, "agent": 2, "limit_price": 101.5, "side": Side.SELL},
    ]))  # fmt: skip
    rep = e.process(intents([{"seq": 2, "agent": 0, "qty": 2.0}]))
    # 1 from the offer at 100.7 (the best), 1 from the market's ask at 101; 101.5 untouched
    assert sorted(fills(rep)) == [(0, 1.0, 100.7, 1), (2, 1.0, 100.7, 0), (2, 1.0, 101.0, 1)]
    assert [r[1:] for r in venue_orders(e)][-1] == (1, 1.0, S.FILLED)
    assert e.book.limits(0)[0].limit_price == 101.5


def test_independent_never_crosses(make_engine, intents, venue_orders, check_invariants):
    e = make_engine()
    e.set_rules(rules(e, Policy.INDEPENDENT))
    rep = e.process(intents([
        {"agent": 0, "qty": 3.0},
        {"agent": 1, "qty": 1.0, "side": Side.SELL},
        {**LIMIT, "agent": 2, "limit_price": 100.8},
        {**LIMIT, "agent": 3, "limit_price": 100.2, "side": Side.SELL},
    ]))  # fmt: skip
    # the market orders at the venue's touch; the limits rest there, one order each
    assert [p for _, _, p, _ in fills(rep)] == [101.0, 100.0]
    assert [r[1:] for r in venue_orders(e)][2:] == [(1, 1.0, S.ACCEPTED), (-1, 1.0, S.ACCEPTED)]
    check_invariants(e, {0: 4})


def test_priority_higher_population_sets_the_side_within_its_window(
    make_engine, intents, events, journal_rows, clock
):
    e = make_engine(clock=clock)
    e.set_rules(rules(e, Policy.PRIORITY, priorities={(0, 1): 5}, priority_window_s=2.0))
    rep = e.process(intents([
        {"agent": 0, "population": 0, "side": Side.SELL},   # priority 0 sells: refused
        {"agent": 0, "population": 1},                      # priority 5 buys
        {"agent": 1, "population": 0},                      # priority 0 buys: same side
    ]))  # fmt: skip
    rejected = {int(r["intent_seq"]): R(r["reason"]) for r in rep[0] if r["kind"] == K.REJECT}
    assert rejected == {0: R.CONFLICT}
    text = journal_rows.order(e.journal, e.journal.intent_client_id(0, 0)).reason_text
    assert "priority 0 < a priority 5 population is buying" in text
    clock.advance(1.0)  # still within the window
    rep = e.process(intents([{"seq": 3, "side": Side.SELL}]))
    assert rep[0]["reason"][0] == R.CONFLICT
    clock.advance(1.5)  # the window has passed
    rep = e.process(intents([{"seq": 4, "side": Side.SELL}]))
    assert events(rep)[-1] == (4, "FILL", 1)


def test_priority_equal_priorities_cross_as_net(make_engine, intents, venue_orders):
    e = make_engine()
    e.set_rules(rules(e, Policy.PRIORITY))
    rep = e.process(intents([{"agent": 0}, {"agent": 1, "side": Side.SELL}]))
    assert [p for _, _, p, _ in fills(rep)] == [100.5, 100.5] and venue_orders(e) == []


def test_unknown_symbol_in_policies_is_refused(make_engine):
    e = make_engine()
    with pytest.raises(ValueError, match="XRP"):
        e.set_rules(Rules({s: e.risk.limits(s) for s in e.symbols}, policies={"XRP/USD": "net"}))


@pytest.mark.parametrize("policy", list(Policy))
def test_agents_sum_to_the_venue_position_under_every_policy(
    policy, make_engine, intents, quotes, trade, venue_positions, agents_sum, check_invariants
):
    """Random batches of market, limit and cancel intents from several agents and two
    populations of different priority, with the market moving through resting quotes."""
    e = make_engine()
    e.set_rules(rules(e, policy, priorities={(0, 1): 1}, priority_window_s=0.001))
    rng = np.random.default_rng(11)
    seq, mid = 0, 100.5
    for _ in range(60):
        rows = []
        for _ in range(int(rng.integers(1, 12))):
            kind = rng.choice(["market", "limit", "limit", "cancel"])
            row = {
                "seq": seq, "agent": int(rng.integers(6)), "population": int(rng.integers(2)),
                "side": int(rng.choice([-1, 1])), "qty": float(rng.integers(1, 20)) / 10,
            }  # fmt: skip
            if kind == "limit":
                row |= {"order_type": OrderType.LIMIT,
                        "limit_price": round(mid + float(rng.normal(0, 0.6)), 2)}  # fmt: skip
            elif kind == "cancel":
                row |= {"order_type": OrderType.CANCEL, "qty": 0.0}
            rows.append(row)
            seq += 1
        e.process(intents(rows))
        mid += float(rng.normal(0, 0.3))
        bid, ask = round(mid - 0.5, 2), round(mid + 0.5, 2)
        e.on_ticks(trade(0, round(mid + float(rng.normal(0, 0.5)), 2), bid, ask, 0.5))
        e.on_ticks(quotes(0, bid, ask, size=3.0))
        assert agents_sum(e) == pytest.approx(venue_positions(e))
    assert e.positions()  # something traded
    check_invariants(e, {0: seq})
