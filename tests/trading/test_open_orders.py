"""The open-order book: exposure follows every change of an open intent."""

from appliance.model.orders import Allocation, IntentOrder, OrderState, VenueOrder
from appliance.trading.open_orders import OpenOrders

S = OrderState


def order(cid: str, side: int = 1, lots: int = 10, agent: int = 0) -> IntentOrder:
    return IntentOrder(cid, side=side, qty_lots=lots, lot=0.1, agent=agent)


def test_exposure_follows_fills_and_ends():
    book = OpenOrders()
    buy, sell, other = order("b"), order("s", side=-1, lots=4), order("o", agent=1)
    for o in (buy, sell, other):
        book.open_intent(o)
    assert book.exposure(buy.key) == (10, 4) and book.exposure(other.key) == (10, 0)
    buy.advance(S.ACCEPTED)
    book.fill(buy, 3, 100.0)
    assert buy.state is S.PARTIALLY_FILLED and buy.avg_price == 100.0
    assert book.exposure(buy.key) == (7, 4)
    book.end(sell, S.REJECTED)
    book.fill(buy, 7, 101.0)
    assert buy.state is S.FILLED and book.exposure(buy.key) == (0, 0)
    book.drop_finished([buy, sell, other], [])
    assert list(book.intents) == ["o"]


def test_uncovered_intents_and_finished_venue_orders():
    book = OpenOrders()
    a, b = order("a"), order("b")
    vo = VenueOrder("1-v1", qty_lots=10, lot=0.1, allocations=[Allocation("a", 10)])
    book.load([a, b], [vo])
    book.in_doubt.add("1-v1")
    assert book.uncovered() == [b]  # a venue order carries a, nothing carries b
    vo.advance(S.SUBMITTED)
    vo.advance(S.REJECTED)
    assert book.uncovered() == [a, b]
    book.drop_finished([], [vo])
    assert book.venue_orders == {} and book.in_doubt == set()
