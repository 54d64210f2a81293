"""The open-order book: every order the execution side still has to see through.

It holds the non-terminal intent orders and venue orders by client id, the unfilled lots
of each agent's open intents per symbol and side (its *exposure*, which the position check
counts as if it will fill), and the venue orders whose state at the venue is unknown
because their submit raised (*in doubt*). An intent's exposure changes only through
``open_intent``, ``fill`` and ``end``, so it always equals the sum of its open orders.

Indexes for what the checks, crossing and cancels look up: the open intents of each agent
in each symbol, the open LIMIT intents per symbol (resting orders), the open venue orders
that carry each intent, and the unfilled lots of all open intents per symbol and side.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.model.orders import IntentOrder, OrderState, VenueOrder
from appliance.model.records import OrderType
from appliance.trading.portfolio import Key


class OpenOrders:
    def __init__(self) -> None:
        self.intents: dict[str, IntentOrder] = {}  # non-terminal intent orders
        self.venue_orders: dict[str, VenueOrder] = {}  # non-terminal venue orders
        self.in_doubt: set[str] = set()  # venue orders whose submit raised
        self._clear_indexes()

    def _clear_indexes(self) -> None:
        self._exposure: dict[Key, list[int]] = {}  # open [buy, sell] lots per agent/symbol
        self._symbol_lots: dict[int, list[int]] = {}  # open [buy, sell] lots per symbol
        self._by_agent: dict[Key, dict[str, IntentOrder]] = {}
        self._limits: dict[int, dict[str, IntentOrder]] = {}  # open LIMIT intents per symbol
        self._carriers: dict[str, dict[str, VenueOrder]] = {}  # intent id -> its venue orders

    def load(self, intents: Iterable[IntentOrder], venue_orders: Iterable[VenueOrder]) -> None:
        """Start from the open orders a journal holds."""
        self.intents, self.venue_orders = {}, {}
        self._clear_indexes()
        self.in_doubt.clear()
        for o in intents:
            self.open_intent(o)
        for vo in venue_orders:
            self.open_venue_order(vo)

    def open_intent(self, o: IntentOrder) -> None:
        self.intents[o.client_order_id] = o
        self._by_agent.setdefault(o.key, {})[o.client_order_id] = o
        if o.order_type == OrderType.LIMIT:
            self._limits.setdefault(o.symbol, {})[o.client_order_id] = o
        self._expose(o, +1)

    def open_venue_order(self, vo: VenueOrder) -> None:
        self.venue_orders[vo.client_order_id] = vo
        for a in vo.allocations:
            self._carriers.setdefault(a.client_order_id, {})[vo.client_order_id] = vo

    def open_count(self, key: Key) -> int:
        """Open intents of (host, population, agent, symbol)."""
        return len(self._by_agent.get(key, ()))

    def agent_intents(self, key: Key) -> list[IntentOrder]:
        """Open intents of (host, population, agent, symbol), oldest first."""
        return list(self._by_agent.get(key, {}).values())

    def limits(self, symbol: int) -> list[IntentOrder]:
        """Open LIMIT intents in ``symbol``, oldest first."""
        return list(self._limits.get(symbol, {}).values())

    def carriers(self, o: IntentOrder) -> list[VenueOrder]:
        """The non-terminal venue orders that carry intent ``o``."""
        return [v for v in self._carriers.get(o.client_order_id, {}).values() if not v.is_terminal]

    def symbol_lots(self, symbol: int) -> tuple[int, int]:
        """Unfilled (buy, sell) lots of every open intent in ``symbol``."""
        e = self._symbol_lots.get(symbol)
        return (e[0], e[1]) if e else (0, 0)

    def exposure(self, key: Key) -> tuple[int, int]:
        """Unfilled (buy, sell) lots of the open intents of (host, population, agent, symbol)."""
        e = self._exposure.get(key)
        return (e[0], e[1]) if e else (0, 0)

    def fill(self, o: IntentOrder, lots: int, price: float) -> None:
        """``lots`` of intent ``o`` (open, so ``lots`` within its rest) traded at ``price``:
        its exposure shrinks by exactly ``lots``, filled whole or not."""
        self._shift(o, -lots)
        o.filled_lots += lots
        o.notional += lots * o.lot * price
        o.advance(OrderState.FILLED if o.filled_lots == o.qty_lots else OrderState.PARTIALLY_FILLED)

    def end(self, o: IntentOrder, state: OrderState) -> None:
        """Intent ``o`` is over (REJECTED or CANCELED) with its remainder unfilled."""
        self._expose(o, -1)
        o.advance(state)

    def uncovered(self) -> list[IntentOrder]:
        """Open intents with lots that no open venue order still carries: nothing can ever
        fill them (a crash between journaling and sending, a venue that lost the order).
        CANCEL intents are not among them: they never have a venue order."""
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
            if not o.is_terminal
            and o.order_type != OrderType.CANCEL
            and o.client_order_id not in covered
        ]

    def drop_finished(
        self, intents: Iterable[IntentOrder], venue_orders: Iterable[VenueOrder]
    ) -> None:
        """Forget the orders among these that reached a terminal state (once journaled)."""
        for o in intents:
            if o.is_terminal and self.intents.pop(o.client_order_id, None) is not None:
                cid = o.client_order_id
                mine = self._by_agent[o.key]
                del mine[cid]
                if not mine:
                    del self._by_agent[o.key]
                self._limits.get(o.symbol, {}).pop(cid, None)
                self._carriers.pop(cid, None)
        for v in venue_orders:
            if v.is_terminal:
                self.venue_orders.pop(v.client_order_id, None)
                self.in_doubt.discard(v.client_order_id)
                for a in v.allocations:
                    self._carriers.get(a.client_order_id, {}).pop(v.client_order_id, None)

    def _expose(self, o: IntentOrder, sign: int) -> None:
        r = o.remaining_lots
        if r:
            self._shift(o, sign * r)

    def _shift(self, o: IntentOrder, lots: int) -> None:
        i = 0 if o.side > 0 else 1
        self._exposure.setdefault(o.key, [0, 0])[i] += lots
        self._symbol_lots.setdefault(o.symbol, [0, 0])[i] += lots
