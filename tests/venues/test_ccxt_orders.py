"""What the ccxt venue remembers of its orders (venues/ccxt_orders.py): each fill reported
once, and memory that does not grow with every fill the process ever saw."""

from __future__ import annotations

from appliance.model.orders import OrderState
from appliance.venues.base import VenueFill
from appliance.venues.ccxt_orders import VenueOrders


def fill(cid: str, trade: str, qty: float = 1.0) -> VenueFill:
    return VenueFill(trade, cid, qty, 100.0, 0.0, False, 1)


def closed(n: int) -> dict:
    return {"id": f"x{n}", "status": "closed", "filled": 1.0}


def test_each_fill_is_reported_once_whatever_path_brings_it():
    orders = VenueOrders(["BTC/USDT"])
    assert orders.note("1-v1", 0, {"id": "x1", "status": "open", "filled": 0}) is (
        OrderState.ACCEPTED
    )
    assert orders.unreported([fill("1-v1", "t1"), fill("1-v1", "t2")]) != []
    assert orders.unreported([fill("1-v1", "t1")]) == []  # the stream's copy of an answer's
    assert orders.open["1-v1"].filled == 2.0
    # the same trade id of another order is another fill
    assert len(orders.unreported([fill("2-v1", "t1")])) == 1


def test_fill_ids_of_ended_orders_are_forgotten_once_enough_ended_after_them():
    orders = VenueOrders(["BTC/USDT"], keep_ended=3)
    orders.note("open-v1", 0, {"id": "x0", "status": "open", "filled": 0})
    orders.unreported([fill("open-v1", "t0", 0.5)])
    for n in range(1, 101):
        cid = f"{n}-v1"
        assert orders.note(cid, 0, closed(n)) is OrderState.FILLED
        assert len(orders.unreported([fill(cid, "t")])) == 1
        assert orders.unreported([fill(cid, "t")]) == []  # a late copy, moments later
    # the open order and the last three that ended are remembered, nothing else
    assert orders.unreported([fill("open-v1", "t0", 0.5)]) == []
    assert [orders.unreported([fill(f"{n}-v1", "t")]) for n in (98, 99, 100)] == [[], [], []]
    assert len(orders.unreported([fill("1-v1", "t")])) == 1  # long forgotten
    assert len(orders._reported) <= 1 + 3 + 1


def test_a_fill_streamed_before_its_orders_answer_stays_known_while_the_order_is_open():
    orders = VenueOrders(["BTC/USDT"], keep_ended=1)
    orders.unreported([fill("1-v1", "t1")])  # the stream was first
    orders.note("1-v1", 0, {"id": "x1", "status": "open", "filled": 1.0})
    for n in range(2, 6):  # others end meanwhile
        orders.note(f"{n}-v1", 0, closed(n))
        orders.unreported([fill(f"{n}-v1", "t")])
    assert orders.unreported([fill("1-v1", "t1")]) == []  # still open: never forgotten
