"""The open-order book: every order the execution side still has to see through.

It holds the non-terminal intent orders and venue orders by client id, the unfilled lots
of each agent's open intents per symbol and side (its *exposure*, which the position check
counts as if it will fill), and the venue orders whose state at the venue is unknown
because their submit raised (*in doubt*). An intent's exposure changes only through
``open_intent``, ``fill`` and ``end``, so it always equals the sum of its open orders.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.model.orders import IntentOrder, OrderState, VenueOrder
from appliance.trading.portfolio import Key


class OrderBook:
    def __init__(self) -> None:
        self.intents: dict[str, IntentOrder] = {}  # non-terminal intent orders
        self.venue_orders: dict[str, VenueOrder] = {}  # non-terminal venue orders
        self.in_doubt: set[str] = set()  # venue orders whose submit raised
        self._exposure: dict[Key, list[int]] = {}  # open [buy, sell] lots per agent/symbol

    def load(self, intents: Iterable[IntentOrder], venue_orders: Iterable[VenueOrder]) -> None:
        """Start from the open orders a journal holds."""
        self.intents, self.venue_orders, self._exposure = {}, {}, {}
        self.in_doubt.clear()
        for o in intents:
            self.open_intent(o)
        for vo in venue_orders:
            self.open_venue_order(vo)

    def open_intent(self, o: IntentOrder) -> None:
        self.intents[o.client_order_id] = o
        self._expose(o, +1)

    def open_venue_order(self, vo: VenueOrder) -> None:
        self.venue_orders[vo.client_order_id] = vo

    def exposure(self, key: Key) -> tuple[int, int]:
        """Unfilled (buy, sell) lots of the open intents of (host, population, agent, symbol)."""
        e = self._exposure.get(key)
        return (e[0], e[1]) if e else (0, 0)

    def fill(self, o: IntentOrder, lots: int, price: float) -> None:
        """``lots`` of intent ``o`` traded at ``price``."""
        self._expose(o, -1)
        o.filled_lots += lots
        o.notional += lots * o.lot * price
        o.advance(OrderState.FILLED if o.filled_lots == o.qty_lots else OrderState.PARTIALLY_FILLED)
        self._expose(o, +1)

    def end(self, o: IntentOrder, state: OrderState) -> None:
        """Intent ``o`` is over (REJECTED or CANCELED) with its remainder unfilled."""
        self._expose(o, -1)
        o.advance(state)

    def uncovered(self) -> list[IntentOrder]:
        """Open intents with lots that no open venue order still carries: nothing can ever
        fill them (a crash between journaling and sending, a venue that lost the order)."""
        covered = {
            a.client_order_id
            for v in self.venue_orders.values()
            if not v.is_terminal
            for a in v.allocations
            if a.remaining_lots
        }
        return [
            o
            for o in self.intents.values()
            if not o.is_terminal and o.client_order_id not in covered
        ]

    def drop_finished(
        self, intents: Iterable[IntentOrder], venue_orders: Iterable[VenueOrder]
    ) -> None:
        """Forget the orders among these that reached a terminal state (once journaled)."""
        for o in intents:
            if o.is_terminal:
                self.intents.pop(o.client_order_id, None)
        for v in venue_orders:
            if v.is_terminal:
                self.venue_orders.pop(v.client_order_id, None)
                self.in_doubt.discard(v.client_order_id)

    def _expose(self, o: IntentOrder, sign: int) -> None:
        r = o.remaining_lots
        if r:
            e = self._exposure.setdefault(o.key, [0, 0])
            e[0 if o.side > 0 else 1] += sign * r
