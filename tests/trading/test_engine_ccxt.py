"""The engine on the real ccxt venue (binanceus classes, loopback exchange) in watch mode:
what happened at the exchange while no stream was subscribed reaches the journal without a
restart, through the venue's REST safety net."""

from __future__ import annotations

import time

import numpy as np

from appliance.markets import make_exchange
from appliance.model.orders import OrderState
from appliance.model.records import TICK, OrderType
from appliance.model.universe import Universe
from appliance.trading.engine import ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskLimits
from tests.loopback import CRV, INSTRUMENTS, OMG, settings, sim_post

NO_TICKS = np.zeros(0, TICK)


async def _start_replay(sim):
    sim.sim.market.subscribed.set()  # as a market subscriber would


def _engine(venue, folder) -> ExecutionEngine:
    e = ExecutionEngine(
        Universe(INSTRUMENTS, None),
        RiskLimits(100.0, 1e5),
        Journal(folder / "journal.sqlite", synchronous="NORMAL"),
        venue,
    )
    e.recover("t")
    return e


def test_a_fill_and_a_cancel_before_the_stream_is_live_are_journaled_once_without_a_restart(
    make_sim, make_venue, tmp_path, quotes, intents, events, journal_rows
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    sim_post(sim, "hold")  # user-data subscriptions wait, unanswered, until released
    e = _engine(make_venue(sim, tmp_path, watch=True, sweep_s=3600), tmp_path)  # no periodic pass
    e.on_ticks(quotes([CRV, OMG], [2.64, 13.79], [2.648, 13.80], size=100.0))
    rep = e.process(intents([
        {"symbol": OMG, "order_type": OrderType.LIMIT, "limit_price": 13.77, "qty": 1.0},
        {"seq": 1, "symbol": CRV, "order_type": OrderType.LIMIT, "limit_price": 2.5, "qty": 10},
    ]))  # fmt: skip
    assert events(rep) == [(0, "ACK", 0), (1, "ACK", 0)]
    ids = {o.symbol: o.client_id for o in sim.sim.engine.account.orders.values()}
    # the OMG buy fills in the replay; someone else on the account cancels the CRV buy
    sim.call(_start_replay(sim))
    other = make_exchange(settings("binanceus", sim.port), pro=False)
    other.cancel_order(None, "CRV/USDT", {"origClientOrderId": ids["CRVUSDT"]})
    deadline = time.monotonic() + 30
    while sim.sim.engine.account.by_client[("OMGBUSD", ids["OMGBUSD"])].status != "FILLED":
        assert time.monotonic() < deadline, "the OMG buy did not fill"
        time.sleep(0.02)
    assert e.on_ticks(NO_TICKS) == {}  # not subscribed: nothing known yet
    sim_post(sim, "release")
    seen = []
    while {(s, k) for s, k, final in seen if final} != {(0, "FILL"), (1, "CANCEL")}:
        assert time.monotonic() < deadline, f"not settled: {seen}"
        seen += events(e.on_ticks(NO_TICKS))
        time.sleep(0.02)
    assert [k for s, k, _ in seen if s == 0] == ["FILL"] * len(sim.sim.engine.account.trades)
    trade_ids = [t["id"] for t in other.fetch_my_trades("OMG/BUSD")]
    assert [f.venue_fill_id for f in e.journal.reads.fills()] == trade_ids  # each once
    assert e.journal.reads.venue_order(ids["OMGBUSD"]).state == OrderState.FILLED
    assert e.journal.reads.venue_order(ids["CRVUSDT"]).state == OrderState.CANCELED
    intent = [journal_rows.order(e.journal, e.journal.intent_client_id(0, q)) for q in (0, 1)]
    assert [o.state for o in intent] == [OrderState.FILLED, OrderState.CANCELED]
    assert e.positions() == {(0, 0, 0, OMG): 1.0} and e.open_orders == 0
    e.journal.close()


def test_an_order_whose_trades_the_exchange_lists_late_is_journaled_filled_without_a_mismatch(
    make_sim, make_venue, tmp_path, quotes, intents, events
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    sim_post(sim, "hold")  # nothing pushed: what the order did is found over REST only
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=3600)
    e = _engine(venue, tmp_path)
    e.on_ticks(quotes([CRV, OMG], [2.64, 13.79], [2.648, 13.80], size=100.0))
    # 60 fills in several trades as the replay crosses 13.77
    rep = e.process(intents([{"symbol": OMG, "order_type": OrderType.LIMIT,
                              "limit_price": 13.77, "qty": 60.0}]))  # fmt: skip
    assert events(rep) == [(0, "ACK", 0)]
    sim.call(_start_replay(sim))
    deadline = time.monotonic() + 30
    while sim.sim.engine.account.orders[1].status != "FILLED":
        assert time.monotonic() < deadline, "the OMG buy did not fill"
        time.sleep(0.02)
    other = make_exchange(settings("binanceus", sim.port), pro=False)
    trade_ids = [t["id"] for t in other.fetch_my_trades("OMG/BUSD")]
    assert len(trade_ids) >= 3
    # the first pass lists one of its trades only (order trades and account trades alike)
    sim_post(sim, "truncate", keep=1, count=2)
    venue.watcher.sweep_interval_s = 0.1  # passes after the one on the subscription
    sim_post(sim, "release")
    seen = []
    while not any(final for _, _, final in seen):
        assert time.monotonic() < deadline, f"not settled: {seen}"
        seen += events(e.on_ticks(NO_TICKS))
        time.sleep(0.02)
    assert seen[-1] == (0, "FILL", 1)
    assert sim.sim.truncate == []  # the short answers were given
    assert [f.venue_fill_id for f in e.journal.reads.fills()] == trade_ids  # each once
    status = e.status()
    assert (status.fill_mismatches, status.unknown_fills) == (0, 0)
    assert e.positions() == {(0, 0, 0, OMG): 60.0} and e.open_orders == 0
    e.journal.close()
