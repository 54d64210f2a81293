"""Checks over the whole account (gross exposure, order rates, drawdown kill switch) and
the journaled trading state."""

import math

import pytest

from appliance.model.enums import TradingState
from appliance.model.records import OrderType, RejectReason, ReportKind, Side
from appliance.trading.account import AccountLimits, Rate
from appliance.trading.engine import Rules

R, K = RejectReason, ReportKind
T = TradingState


def with_account(e, **limits):
    e.set_rules(Rules({s: e.risk.limits(s) for s in e.symbols}, AccountLimits(**limits)))


def reasons(rep):
    return {int(r["intent_seq"]): R(r["reason"]) for r in rep[0] if r["kind"] == K.REJECT}


def test_gross_exposure_counts_every_agent_and_lets_reductions_through(make_engine, intents):
    e = make_engine()  # BTC/USD mid 100.5, ETH/USD mid 10.5
    with_account(e, max_gross_exposure=1000.0)
    rep = e.process(intents([
        {"agent": 0, "qty": 5.0},                           # ~502: fits
        {"agent": 1, "symbol": 1, "qty": 40.0},             # +420: fits (922)
        {"agent": 2, "qty": 1.0},                           # +100.5: 1,023 > 1000
        {"agent": 3, "symbol": 1, "qty": 10.0},             # +105 > 1000
        {"agent": 3, "symbol": 1, "qty": 5.0, "side": Side.SELL},  # no growth: passes
    ]))  # fmt: skip
    assert reasons(rep) == {2: R.MAX_GROSS_EXPOSURE, 3: R.MAX_GROSS_EXPOSURE}
    # other agents may take the account's exposure down: a sell of BTC passes
    rep = e.process(intents([{"seq": 5, "agent": 4, "qty": 2.0, "side": Side.SELL}]))
    assert reasons(rep) == {}


def test_open_limit_orders_count_as_filled(make_engine, intents):
    e = make_engine()
    with_account(e, max_gross_exposure=500.0)
    lim = {"order_type": OrderType.LIMIT, "limit_price": 99.0}
    rep = e.process(intents([{**lim, "qty": 4.0}, {**lim, "agent": 1, "qty": 1.0}]))
    assert reasons(rep) == {1: R.MAX_GROSS_EXPOSURE}  # 4 + 1 open at mid 100.5 > 500


def test_order_rate_per_agent(make_engine, intents, clock):
    e = make_engine(clock=clock)
    with_account(e, agent_rate=Rate(rate=1.0, burst=2.0))
    rep = e.process(intents([{"seq": i, "qty": 0.1} for i in range(3)] + [{"seq": 3, "agent": 1}]))
    assert reasons(rep) == {2: R.ORDER_RATE}  # agent 1 has its own bucket
    clock.advance(1.0)  # one token back
    rep = e.process(intents([{"seq": 4 + i, "qty": 0.1} for i in range(2)]))
    assert reasons(rep) == {5: R.ORDER_RATE}
    # cancels never take a token
    rep = e.process(intents([{"seq": 6, "order_type": OrderType.CANCEL, "qty": 0.0}]))
    assert reasons(rep) == {}


def test_order_rate_of_the_account(make_engine, intents, clock):
    e = make_engine(clock=clock)
    with_account(e, agent_rate=Rate(10.0, 10.0), rate=Rate(rate=2.0, burst=3.0))
    rep = e.process(intents([{"seq": i, "agent": i, "qty": 0.1} for i in range(5)]))
    assert reasons(rep) == {3: R.ORDER_RATE, 4: R.ORDER_RATE}
    clock.advance(0.5)
    rep = e.process(intents([{"seq": 5 + i, "agent": i, "qty": 0.1} for i in range(2)]))
    assert reasons(rep) == {6: R.ORDER_RATE}
    # a reject by the account's bucket leaves the agent its token: agent 4 still has 10
    assert e.pretrade.account._agents[(0, 0, 4)].tokens == pytest.approx(10.0)


@pytest.mark.parametrize("action", [T.REDUCE_ONLY, T.HALTED])
def test_drawdown_kill_switch(make_engine, intents, quotes, journal_rows, action):
    e = make_engine()
    with_account(e, max_drawdown=5.0, drawdown_action=action)
    e.process(intents([
        {"agent": 0, "qty": 2.0},                                        # long 2 at 101
        {"seq": 1, "agent": 1, "order_type": OrderType.LIMIT, "limit_price": 95.0},
    ]))  # fmt: skip
    assert e.status().trading == "active"
    rep = e.on_ticks(quotes(0, 99.0, 100.0))  # marks: 2 * (99.5 - 101) - fees = -3.2
    assert rep == {} and e.status().trading == "active"
    rep = e.on_ticks(quotes(0, 98.0, 99.0))  # -5.2: 5 below the peak, trips
    assert e.status().trading == action.value
    assert [(int(r["intent_seq"]), int(r["kind"])) for r in rep[0]] == [(1, K.CANCEL)]
    assert "drawdown kill switch" in e.status().trading_why
    [change] = [c for c in e.journal.trading_states() if c.who == "drawdown kill switch"]
    assert (change.state, change.previous) == (action.value, "active")
    want = R.HALTED if action is T.HALTED else R.REDUCE_ONLY
    rep = e.process(intents([{"seq": 2, "agent": 2, "qty": 1.0}]))
    assert reasons(rep) == {2: want}
    # the operator resumes: the peak starts again, so the same loss does not trip it
    e.set_trading_state(T.ACTIVE, "operator bob", "after a look")
    e.on_ticks(quotes(0, 97.9, 98.9))
    assert e.status().trading == "active"


def test_trading_state_is_journaled_and_survives_an_execution_restart(make_engine, intents):
    e = make_engine()
    e.set_trading_state(T.HALTED, "operator alice (uid 1000)", "fat fingers upstream")
    assert [(c.state, c.who) for c in e.journal.trading_states()] == [
        ("active", "config"), ("halted", "operator alice (uid 1000)")
    ]  # fmt: skip
    del e
    e2 = make_engine()  # same epoch: the queues (the appliance) lived on
    assert e2.status().trading == "halted"
    assert "fat fingers upstream" in e2.status().trading_why
    rep = e2.process(intents([{"seq": 0}]))
    assert reasons(rep) == {0: R.HALTED}
    e3 = make_engine(epoch="queues-2")  # a new appliance lifetime: the config's state
    assert e3.status().trading == "active"
    assert e3.set_trading_state(T.ACTIVE, "x", "no change") == {}
    assert [c.state for c in e3.journal.trading_states("queues-2")] == ["active"]


def test_account_limits_are_checked():
    with pytest.raises(ValueError):
        AccountLimits(drawdown_action=T.ACTIVE)
    with pytest.raises(ValueError):
        Rate(rate=0.0, burst=1.0)
    assert math.isinf(AccountLimits().max_drawdown)
