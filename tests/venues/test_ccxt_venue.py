"""The ccxt venue against the loopback exchange with the real ccxt binanceus classes."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import requests

from appliance.markets import Credentials, make_exchange
from appliance.model.orders import OrderState
from appliance.model.records import TICK, OrderType, RejectReason, Side
from appliance.venues.base import OrderRequest
from appliance.venues.ccxt_state import CcxtVenueState
from appliance.venues.ccxt_venue import CcxtVenue, VenueError
from tests.loopback import CRV, INSTRUMENTS, KEY, OMG, settings


def quote(symbol: int, bid: float, ask: float) -> np.ndarray:
    t = np.zeros(1, TICK)
    t["symbol"], t["bid"], t["ask"], t["kind"] = symbol, bid, ask, 1
    return t


def market(cid, symbol, side, qty):
    return OrderRequest(cid, symbol, side, OrderType.MARKET, qty)


def limit(cid, symbol, side, qty, price):
    return OrderRequest(cid, symbol, side, OrderType.LIMIT, qty, price)


@pytest.mark.parametrize(
    ("order", "why"),
    [
        (limit("1-v1", CRV, Side.BUY, 0.05, 2.5), "amount"),  # rounds to 0
        (limit("1-v1", CRV, Side.BUY, 1.0, 2.5), "cost 2.5 below the market minimum 10"),
        (limit("1-v1", CRV, Side.BUY, 10, 20000.0), "price 20000 above the market maximum 10000"),
        (market("1-v1", CRV, Side.BUY, 1.0), "cost 2.648 below the market minimum 10"),
    ],
)
def test_orders_that_cannot_be_valid_are_rejected_and_never_sent(
    make_sim, make_venue, tmp_path, order, why
):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path)
    venue.on_ticks(quote(CRV, 2.64, 2.648))
    status = venue.submit(order)
    assert status.state == OrderState.REJECTED and status.reason == RejectReason.BAD_ORDER
    assert why in status.reason_text and "CRV/USDT" in status.reason_text
    assert sim.sim.engine.account.orders == {} and sim.sim.requests["/api/v3/order"] == 0
    venue.close()


def test_market_order_fills_with_the_exchange_trade_ids(make_sim, make_venue, tmp_path):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path)
    venue.on_ticks(quote(CRV, 2.64, 2.648))
    status = venue.submit(market("3-v1", CRV, Side.BUY, 10.0))
    assert status.state == OrderState.FILLED and status.filled_qty == 10.0
    trades = sim.sim.engine.account.trades
    assert [f.venue_fill_id for f in status.fills] == [str(t.trade_id) for t in trades]
    assert sum(f.qty for f in status.fills) == 10.0
    assert status.fills[0].fee == pytest.approx(float(trades[0].commission))
    assert sim.sim.engine.account.orders[1].client_id == "3-v1"  # our id went to the exchange
    assert venue.state.attempts("3-v1") == [(1, "send", "ok", "")]
    again = venue.fetch_order("3-v1")
    assert again.state == OrderState.FILLED and again.fills == status.fills
    venue.close()


def test_limit_order_rests_is_listed_cancelled_and_a_resend_is_recognised(
    make_sim, make_venue, tmp_path
):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path)
    status = venue.submit(limit("4-v1", CRV, Side.BUY, 10.0, 2.5))
    assert status.state == OrderState.ACCEPTED and status.fills == ()
    assert [o.client_id for o in venue.open_orders()] == ["4-v1"]
    resend = venue.submit(limit("4-v1", CRV, Side.BUY, 10.0, 2.5))
    assert resend.duplicate and len(sim.sim.engine.account.orders) == 1
    cancelled = venue.cancel("4-v1")
    assert cancelled.state == OrderState.CANCELED
    assert venue.open_orders() == []
    assert venue.cancel("never-sent") is None and venue.fetch_order("never-sent") is None
    venue.close()


def test_a_lost_answer_is_retried_without_a_second_order(make_sim, make_venue, tmp_path):
    sim = make_sim("binance-us")
    venue = make_venue(sim, tmp_path)
    venue.exchange.timeout = 300  # ms: the delayed answer below never comes in time
    requests.post(f"http://127.0.0.1:{sim.port}/sim/delay?seconds=1.5&count=1", timeout=5)
    status = venue.submit(market("5-v1", CRV, Side.BUY, 10.0))
    assert status.state == OrderState.FILLED and status.filled_qty == 10.0
    assert len(sim.sim.engine.account.orders) == 1  # the exchange had it: not sent again
    attempts = venue.state.attempts("5-v1")
    assert [a[2] for a in attempts] == ["network"] and "RequestTimeout" in attempts[0][3]
    venue.close()


def test_resting_order_fill_arrives_through_watch_my_trades(make_sim, make_venue, tmp_path):
    # OMG/BUSD asks fall from 13.7964 to 13.7624 during the capture: a buy at 13.77 rests,
    # then the replay crosses it
    sim = make_sim("binance-us", start_delay_s=0.5)
    venue = make_venue(sim, tmp_path, watch=True)
    status = venue.submit(limit("6-v1", OMG, Side.BUY, 1.0, 13.77))
    assert status.state == OrderState.ACCEPTED
    client = make_exchange(settings("binanceus", sim.port), pro=False)
    fills = []
    deadline = time.monotonic() + 30
    # the replay crosses the order only once the watch is subscribed (a busy machine may
    # take a while to start the watcher's thread and log in)
    while not (sim.sim.users.api or sim.sim.users.keyed) and time.monotonic() < deadline:
        time.sleep(0.02)
    sim.call(_start_replay(sim))
    while not fills and time.monotonic() < deadline:
        fills += venue.on_ticks(np.zeros(0, TICK))
        time.sleep(0.02)
    assert [f.client_id for f in fills] == ["6-v1"] and fills[0].maker
    assert fills[0].price == 13.77 and fills[0].qty == 1.0
    mine = client.fetch_my_trades("OMG/BUSD")
    assert [f.venue_fill_id for f in fills] == [t["id"] for t in mine]
    assert venue.on_ticks(np.zeros(0, TICK)) == []  # reported once
    venue.close()


async def _start_replay(sim):
    sim.sim.market.subscribed.set()  # as a market subscriber would


def test_polling_finds_the_same_fill(make_sim, make_venue, tmp_path):
    sim = make_sim("binance-us", start_delay_s=0.2)
    venue = make_venue(sim, tmp_path, watch=False)
    venue.submit(limit("7-v1", OMG, Side.BUY, 1.0, 13.77))
    sim.call(_start_replay(sim))
    fills = []
    deadline = time.monotonic() + 30
    while not fills and time.monotonic() < deadline:
        fills += venue.on_ticks(np.zeros(0, TICK))
        time.sleep(0.05)
    assert [(f.client_id, f.price, f.qty) for f in fills] == [("7-v1", 13.77, 1.0)]
    venue.close()


def test_wrong_keys_stop_the_venue_at_start_and_never_show(make_sim, make_venue, tmp_path, caplog):
    sim = make_sim("binance-us")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(VenueError, match="binanceus refused the keys") as err:
        make_venue(sim, tmp_path, secret="not-the-secret-0123456789")
    text = str(err.value) + caplog.text
    assert "-1022" in text
    for secret in (KEY, "not-the-secret-0123456789"):
        assert secret not in text


def test_no_keys_is_a_clear_error(make_sim, tmp_path):
    sim = make_sim("binance-us")
    s = settings("binanceus", sim.port)
    venue = CcxtVenue(
        make_exchange(s, pro=False),
        INSTRUMENTS,
        CcxtVenueState(tmp_path / "v.sqlite"),
        Credentials(),
    )
    with pytest.raises(VenueError, match="needs keys"):
        venue.start()
