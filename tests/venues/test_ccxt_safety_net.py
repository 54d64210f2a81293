"""Watch mode's REST safety net, with the real ccxt and ccxt.pro binanceus classes against
the loopback exchange: fills the stream never pushed (made before its subscription was live,
or lost without a disconnect) and orders ended at the exchange without an event are found
without a restart, and every fill is reported once whichever path saw it first."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from appliance.markets import make_exchange
from appliance.model.orders import OrderState
from appliance.model.records import TICK, OrderType, Side
from appliance.venues.base import OrderRequest, VenueFill
from appliance.venues.ccxt_venue import CcxtVenue
from tests.loopback import CRV, OMG, SimThread, settings, sim_post

NO_TICKS = np.zeros(0, TICK)
# OMG/BUSD asks fall from 13.7964 to 13.7624 during the capture: a buy at 13.77 rests until
# the replay crosses it
CROSSED = 13.77


def wait_for(ok: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def reported(venue: CcxtVenue, qty: float) -> list[VenueFill]:
    """What the venue reports until ``qty`` filled (or the wait gives up)."""
    fills: list[VenueFill] = []
    wait_for(lambda: sum(f.qty for f in fills.__iadd__(venue.on_ticks(NO_TICKS))) >= qty,
             f"fills of {qty}")  # fmt: skip
    return fills


def trade_ids(sim: SimThread, symbol: str) -> list[str]:
    """The account's trades in ``symbol`` as the exchange recorded them."""
    client = make_exchange(settings("binanceus", sim.port), pro=False)
    return [t["id"] for t in client.fetch_my_trades(symbol)]


def exchange_status(sim: SimThread, cid: str) -> str:
    found = [o for o in sim.sim.engine.account.orders.values() if o.client_id == cid]
    return found[0].status if found else ""


def resting_buy(cid: str) -> OrderRequest:
    return OrderRequest(cid, OMG, Side.BUY, OrderType.LIMIT, 1.0, CROSSED)


async def _start_replay(sim):
    sim.sim.market.subscribed.set()  # as a market subscriber would


def test_a_fill_before_the_subscription_is_live_is_reported_without_a_restart(
    make_sim, make_venue, tmp_path
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    sim_post(sim, "hold")  # user-data subscriptions wait, unanswered, until released
    # no periodic pass in this test: only the one when the subscription becomes live
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=3600)
    assert venue.submit(resting_buy("8-v1")).state == OrderState.ACCEPTED
    wait_for(lambda: sim.sim.users.waiting, "the subscription asked for")
    sim.call(_start_replay(sim))
    wait_for(lambda: exchange_status(sim, "8-v1") == "FILLED", "the fill at the exchange")
    assert venue.on_ticks(NO_TICKS) == []  # nothing pushed it: not subscribed yet
    assert venue.watcher.sweep.passes == 0  # the subscription is not taken for live early
    assert sim_post(sim, "release") == {"released": 1}
    fills = reported(venue, 1.0)
    assert [f.venue_fill_id for f in fills] == trade_ids(sim, "OMG/BUSD")
    assert {(f.client_id, f.price, f.maker) for f in fills} == {("8-v1", CROSSED, True)}
    ended = venue.ended()
    assert [(s.client_id, s.state, s.filled_qty) for s in ended] == [
        ("8-v1", OrderState.FILLED, 1.0)
    ]
    assert venue.on_ticks(NO_TICKS) == [] and venue.ended() == []  # once


def test_a_fill_the_stream_lost_is_reported_by_the_safety_net_once(make_sim, make_venue, tmp_path):
    sim = make_sim("binance-us", start_delay_s=0.0)
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=0.1)
    wait_for(lambda: sim.sim.users.api, "the user-data subscription")
    venue.submit(resting_buy("9-v1"))
    sim_post(sim, "lose", count=1)  # the fill's executionReport; the stream stays open
    sim.call(_start_replay(sim))
    fills = reported(venue, 1.0)
    assert [f.venue_fill_id for f in fills] == trade_ids(sim, "OMG/BUSD")
    assert sim.sim.users.lost["executionReport"] == 0  # it was lost
    assert len(sim.sim.users.api) == 1 and venue.watcher.reconnects == 0  # no disconnect
    assert [s.state for s in venue.ended()] == [OrderState.FILLED]
    passes, asked = venue.watcher.sweep.passes, dict(sim.sim.requests)
    wait_for(lambda: venue.watcher.sweep.passes >= passes + 2, "two more passes")
    assert venue.on_ticks(NO_TICKS) == [] and venue.ended() == []  # once
    assert sim.sim.requests == asked  # no open order: no request


def test_a_fill_seen_by_the_stream_and_the_safety_net_is_reported_once(
    make_sim, make_venue, tmp_path
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=0.1)
    wait_for(lambda: sim.sim.users.api, "the user-data subscription")
    venue.submit(resting_buy("10-v1"))
    sim.call(_start_replay(sim))
    # both paths see the fill before the venue looks at either
    wait_for(lambda: not venue.watcher.trades.empty(), "the fill through the stream")
    wait_for(lambda: sim.sim.requests["/api/v3/myTrades"] > 0, "the fill asked for over REST")
    fills, ended = [], []
    while not ended:
        fills += venue.on_ticks(NO_TICKS)
        ended += venue.ended()
    fills += venue.on_ticks(NO_TICKS)
    assert [f.venue_fill_id for f in fills] == trade_ids(sim, "OMG/BUSD")
    assert [(s.client_id, s.state) for s in ended] == [("10-v1", OrderState.FILLED)]


def test_fills_in_an_order_answer_are_not_reported_again_from_the_stream(
    make_sim, make_venue, tmp_path
):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path, watch=True)
    wait_for(lambda: sim.sim.users.api, "the user-data subscription")
    status = venue.submit(OrderRequest("11-v1", CRV, Side.BUY, OrderType.MARKET, 10.0))
    assert status.state == OrderState.FILLED
    assert [f.venue_fill_id for f in status.fills] == trade_ids(sim, "CRV/USDT")
    wait_for(lambda: venue.watcher.trades.qsize() >= len(status.fills), "the stream's copies")
    assert venue.on_ticks(NO_TICKS) == []


def test_an_order_cancelled_at_the_exchange_without_an_event_is_resolved(
    make_sim, make_venue, tmp_path
):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=0.1)
    venue.submit(OrderRequest("12-v1", CRV, Side.BUY, OrderType.LIMIT, 10.0, 2.5))
    # someone else on the account (a website session) cancels it; watch_my_trades has no
    # event for a cancel
    other = make_exchange(settings("binanceus", sim.port), pro=False)
    other.cancel_order(None, "CRV/USDT", {"origClientOrderId": "12-v1"})
    ended = []
    wait_for(lambda: ended.__iadd__(venue.ended() if not venue.on_ticks(NO_TICKS) else []),
             "the cancel found")  # fmt: skip
    assert [(s.client_id, s.state, s.filled_qty) for s in ended] == [
        ("12-v1", OrderState.CANCELED, 0.0)
    ]
