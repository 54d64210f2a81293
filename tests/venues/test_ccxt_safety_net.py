"""Watch mode's REST safety net, with the real ccxt and ccxt.pro binanceus classes against
the loopback exchange: fills the stream never pushed (made before its subscription was live,
or lost without a disconnect) and orders ended at the exchange without an event are found
without a restart, and every fill is reported once whichever path saw it first."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
import pytest

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


# fills in several trades as the replay crosses it (the capture's asks at or below 13.77
# hold more than one level's quantity)
MANY = 60.0


@pytest.mark.parametrize("short_answers", [1, 2], ids=["paged-in-one-pass", "next-pass"])
def test_an_order_over_whose_trades_are_listed_in_part_ends_filled_with_each_fill_once(
    make_sim, make_venue, tmp_path, short_answers
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    sim_post(sim, "hold")  # nothing pushed: what the order did is found over REST only
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=3600)
    order = OrderRequest("13-v1", OMG, Side.BUY, OrderType.LIMIT, MANY, CROSSED)
    assert venue.submit(order).state == OrderState.ACCEPTED
    wait_for(lambda: sim.sim.users.waiting, "the subscription asked for")
    sim.call(_start_replay(sim))
    wait_for(lambda: exchange_status(sim, "13-v1") == "FILLED", "the fills at the exchange")
    ids = trade_ids(sim, "OMG/BUSD")
    assert len(ids) >= 3
    # the pass on the subscription gets its first trade only (once: the order's trades;
    # twice: its paging over the account's trades too, so the next pass must find the rest)
    sim_post(sim, "truncate", keep=1, count=short_answers)
    venue.watcher.sweep_interval_s = 0.1  # passes after the one on the subscription
    sim_post(sim, "release")
    fills: list[VenueFill] = []
    ended: list[tuple[str, OrderState, float, float]] = []

    def engine_step() -> bool:  # as the engine takes them: fills, then the orders over
        fills.extend(venue.on_ticks(NO_TICKS))
        reported = sum(f.qty for f in fills)
        ended.extend((s.client_id, s.state, s.filled_qty, reported) for s in venue.ended())
        return bool(ended)

    wait_for(engine_step, "the order found over")
    assert sim.sim.truncate == []  # the short answers were given
    assert sorted(f.venue_fill_id for f in fills) == sorted(ids)  # each once
    assert len(ended) == 1
    cid, state, filled, reported = ended[0]
    assert (cid, state, filled) == ("13-v1", OrderState.FILLED, MANY)
    assert reported == pytest.approx(MANY)  # all its fills came first: no mismatch
    assert venue.on_ticks(NO_TICKS) == [] and venue.ended() == []


def test_an_order_looked_up_whose_trades_are_listed_in_part_gets_the_rest_by_paging(
    make_sim, make_venue, tmp_path
):
    """The lookups outside the safety net (polling, a restart's reconciliation, a cancel's
    answer) take an order's trades the same whole way."""
    sim = make_sim("binance-us", start_delay_s=0.0)
    venue = make_venue(sim, tmp_path)  # polling: nothing looks until asked
    order = OrderRequest("15-v1", OMG, Side.BUY, OrderType.LIMIT, MANY, CROSSED)
    assert venue.submit(order).state == OrderState.ACCEPTED
    sim.call(_start_replay(sim))
    wait_for(lambda: exchange_status(sim, "15-v1") == "FILLED", "the fills at the exchange")
    ids = trade_ids(sim, "OMG/BUSD")
    assert len(ids) >= 3
    sim_post(sim, "truncate", keep=1)  # the order's trades come back short, once
    status = venue.fetch_order("15-v1")
    assert sim.sim.truncate == []
    assert (status.state, status.filled_qty) == (OrderState.FILLED, MANY)
    assert sorted(f.venue_fill_id for f in status.fills) == sorted(ids)


def test_a_pass_that_fails_on_an_odd_answer_leaves_the_stream_and_the_next_pass_running(
    make_sim, make_venue, tmp_path, caplog
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=0.1)
    assert venue.submit(resting_buy("16-v1")).state == OrderState.ACCEPTED
    sweep, run = venue.watcher.sweep, venue.watcher.sweep.run
    odd = []

    async def odd_once(exchange):
        if not odd:
            odd.append(1)
            raise KeyError("filled")  # what a malformed order dict gives
        await run(exchange)

    sweep.run = odd_once
    wait_for(lambda: sweep.passes >= 2, "passes after the odd one")
    assert venue.watcher.error is None
    assert "open orders over REST: KeyError: 'filled'" in caplog.text
    sim.call(_start_replay(sim))
    fills = reported(venue, 1.0)  # the stream still runs
    assert [f.venue_fill_id for f in fills] == trade_ids(sim, "OMG/BUSD")


def test_watching_on_an_exchange_ccxt_pro_lacks_falls_back_to_polling(
    make_sim, make_venue, tmp_path, caplog
):
    sim = make_sim("binance-us", start_delay_s=0.0)
    # bitflyer: a ccxt exchange without a ccxt.pro class
    venue = make_venue(sim, tmp_path, watch=True, watch_id="bitflyer")
    wait_for(lambda: venue.watcher.error is not None, "the watcher's error")
    assert "bitflyer" in venue.watcher.error and "ccxt.pro" in venue.watcher.error
    assert "order updates stopped" in caplog.text and "falling back to polling" in caplog.text
    venue.submit(resting_buy("14-v1"))
    sim.call(_start_replay(sim))
    fills = reported(venue, 1.0)  # polled
    assert [f.venue_fill_id for f in fills] == trade_ids(sim, "OMG/BUSD")


def test_stopping_with_a_request_in_flight_leaves_no_task_behind(
    make_sim, make_venue, tmp_path, caplog
):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path, watch=True, sweep_s=0.1)
    venue.submit(OrderRequest("15-v1", CRV, Side.BUY, OrderType.LIMIT, 10.0, 2.5))
    sim_post(sim, "delay", path="/api/v3/openOrders", seconds=5, count=1)
    asked = sim.sim.requests["/api/v3/openOrders"]
    wait_for(lambda: sim.sim.requests["/api/v3/openOrders"] > asked, "a pass in flight")
    venue.close()
    gc.collect()  # a task still pending is destroyed here, and says so
    assert "Task was destroyed but it is pending" not in caplog.text
