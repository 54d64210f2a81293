"""Routing: which intents cross internally, and which venue orders carry the rest.

A policy per symbol decides how the intents of different agents meet (conflict resolution):

- ``net``: intents cross internally wherever the agents would have traded with each other
  at a venue, and only what is left goes out. First, new intents take resting LIMIT
  intents of the other side (other agents' quotes at the venue) that they reach: a buy
  reaches a resting sell at or below both its own limit and the market's ask (a resting
  sell above the ask is not the best offer, the market's is). Then new intents cross each
  other. Both by price level (netting.cross), at the mid clamped into the two prices. A
  new intent's price is its limit, bounded by the touch it would take at the venue (the
  ask for a buy, the bid for a sell): a market order's is the touch. A resting intent that
  is crossed is first withdrawn from the venue (cancelled there, keeping whatever filled
  meanwhile); what is left of it goes out again in a new venue order at its limit. What
  is left of new MARKET intents goes out as one venue order per side, carrying each
  intent's share; each LIMIT intent's rest is a venue order of its own (one open venue
  order per resting intent: cancelling it never touches another agent's quote).
- ``priority``: populations have priorities. Within ``window_ns`` of an intent of a
  higher-priority population on a symbol, intents of lower priority on the other side are
  rejected (CONFLICT, see conflicts.py); the rest is routed as ``net``.
- ``independent``: no crossing; every intent is a venue order of its own.

Internal crosses are fills of each agent's own intent (journaled per agent), so per-agent
positions stay exact and their sum is always the account's position at the venue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from appliance.model.orders import Allocation, IntentOrder, OrderState, VenueOrder
from appliance.model.records import OrderType
from appliance.trading.batch import Batch
from appliance.trading.journal import Journal
from appliance.trading.netting import Crossed, cross
from appliance.trading.open_orders import OpenOrders
from appliance.venues.base import QuoteBook, Venue

log = logging.getLogger(__name__)

_RESTING = (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)
Member = tuple[int, IntentOrder]  # (position in the batch, or -1 for a resting order; order)


class Policy(StrEnum):
    NET = "net"
    PRIORITY = "priority"
    INDEPENDENT = "independent"


@dataclass(frozen=True)
class Routed:
    """A batch's live (passing) intent orders with what routing needs of each."""

    orders: Sequence[IntentOrder]
    price: np.ndarray  # best price each accepts: limit bounded by the touch; market: touch
    cancelled: frozenset[tuple]  # (key, side) that a CANCEL of this batch withdraws


class Router:
    def __init__(
        self,
        book: OpenOrders,
        venue: Venue,
        journal: Journal,
        quotes: QuoteBook,
        lots: np.ndarray,
        fee_rate: float,
    ) -> None:
        self.book = book
        self.venue = venue
        self.journal = journal
        self.quotes = quotes
        self.lots = lots
        self.fee_rate = fee_rate  # internal crosses, charged to both sides
        self.policies: dict[int, Policy] = {}  # symbol index -> policy (default: net)

    def set_policies(self, policies: Mapping[int, Policy | str]) -> None:
        self.policies = {s: Policy(p) for s, p in policies.items()}

    def route(self, r: Routed, now: int, b: Batch) -> None:
        """Cross and make venue orders for ``r.orders`` (into ``b``), symbol by symbol."""
        by_symbol: dict[int, list[int]] = {}
        for i, o in enumerate(r.orders):
            by_symbol.setdefault(o.symbol, []).append(i)
        for sym, idx in by_symbol.items():
            orders = [r.orders[i] for i in idx]
            if self.policies.get(sym, Policy.NET) is Policy.INDEPENDENT:
                for o in orders:
                    limit = o.limit_price if o.order_type == OrderType.LIMIT else 0.0
                    self._venue_order(o.symbol, o.side, o.order_type, limit, [o], now, b)
                continue
            price = r.price[idx]
            left = np.array([o.qty_lots for o in orders], np.int64)
            self._cross_resting(sym, orders, price, left, r.cancelled, now, b)
            self._cross_new(sym, orders, price, left, now, b)
            self._rest_to_venue(orders, left, now, b)

    # ---- crossing ---------------------------------------------------------------------------

    def _fill(self, o: IntentOrder, lots: int, price: float, now: int, b: Batch) -> None:
        if o.state == OrderState.NEW:
            b.accept(o)
        b.fill(o, lots, price, lots * o.lot * price * self.fee_rate, now)

    def _apply(
        self, c: Crossed, buys: list[Member], sells: list[Member], now: int, b: Batch
    ) -> None:
        """The fills of ``c``, whose members are (batch position, order): in batch order
        over both sides, as a batch's reports read (resting orders, position -1, first)."""
        fills = [(*buys[m], lots, price) for m, lots, price in c.buy_fills]
        fills += [(*sells[m], lots, price) for m, lots, price in c.sell_fills]
        for _, o, lots, price in sorted(fills, key=lambda f: f[0]):
            self._fill(o, lots, price, now, b)

    def _cross_new(
        self,
        sym: int,
        orders: list[IntentOrder],
        price: np.ndarray,
        left: np.ndarray,
        now: int,
        b: Batch,
    ) -> None:
        buy = np.array([o.side > 0 for o in orders]) & (left > 0)
        sell = np.array([o.side < 0 for o in orders]) & (left > 0)
        if not (buy.any() and sell.any()):
            return
        bi, si = np.flatnonzero(buy), np.flatnonzero(sell)
        c = cross(price[bi], left[bi], price[si], left[si], float(self.quotes.mid[sym]))
        left[bi], left[si] = c.buy_left, c.sell_left
        members = [(i, orders[i]) for i in range(len(orders))]
        self._apply(c, [members[i] for i in bi], [members[i] for i in si], now, b)

    def _cross_resting(
        self,
        sym: int,
        orders: list[IntentOrder],
        price: np.ndarray,
        left: np.ndarray,
        cancelled: frozenset[tuple],
        now: int,
        b: Batch,
    ) -> None:
        """New intents take the resting LIMIT intents of the other side that they reach."""
        resting = [
            o
            for o in self.book.limits(sym)
            if o.state in _RESTING and o.remaining_lots and (o.key, o.side) not in cancelled
        ]
        if not resting:
            return
        mid = float(self.quotes.mid[sym])
        for side in (1, -1):  # new buys against resting sells, then new sells against buys
            new = [i for i, o in enumerate(orders) if o.side == side and left[i] > 0]
            # A resting sell above the ask (a buy below the bid) is not the best price.
            touch = self.quotes.ask[sym] if side > 0 else self.quotes.bid[sym]
            rest = [
                o
                for o in resting
                if o.side == -side
                and not (side > 0 and o.limit_price > touch)
                and not (side < 0 and o.limit_price < touch)
            ]
            if not (new and rest):
                continue
            plan = self._meet(side, price[new], left[new], rest, mid)
            taken = [o for o, lots in zip(rest, plan, strict=True) if lots]
            withdrawn = [o for o in taken if self._withdraw(o, b)]
            if not withdrawn:
                continue
            rest_left = np.array([o.remaining_lots for o in withdrawn], np.int64)
            rest_px = np.array([o.limit_price for o in withdrawn])
            new_px, new_left = price[new], left[new]
            takers = [(i, orders[i]) for i in new]
            makers = [(-1, o) for o in withdrawn]
            if side > 0:
                c = cross(new_px, new_left, rest_px, rest_left, mid)
                left[new] = c.buy_left
                self._apply(c, takers, makers, now, b)
            else:
                c = cross(rest_px, rest_left, new_px, new_left, mid)
                left[new] = c.sell_left
                self._apply(c, makers, takers, now, b)
            for o in withdrawn:  # what is left rests again, at its limit
                if o.remaining_lots:
                    self._venue_order(sym, o.side, OrderType.LIMIT, o.limit_price, [o], now, b)

    @staticmethod
    def _meet(
        side: int, new_px: np.ndarray, new_left: np.ndarray, rest: list[IntentOrder], mid: float
    ) -> list[int]:
        """Lots each resting intent would cross (before anything is withdrawn)."""
        rest_px = np.array([o.limit_price for o in rest])
        rest_left = np.array([o.remaining_lots for o in rest], np.int64)
        if side > 0:
            c = cross(new_px, new_left, rest_px, rest_left, mid)
            return (rest_left - c.sell_left).tolist()
        c = cross(rest_px, rest_left, new_px, new_left, mid)
        return (rest_left - c.buy_left).tolist()

    def _withdraw(self, o: IntentOrder, b: Batch) -> bool:
        """Cancel the venue order that carries resting intent ``o``; True when it is off
        the venue with lots left to cross."""
        carriers = self.book.carriers(o)
        if len(carriers) != 1 or carriers[0].client_order_id in self.book.in_doubt:
            return False
        vo = carriers[0]
        try:
            status = self.venue.cancel(vo.client_order_id)
        except Exception:
            log.exception("withdrawing %s to cross it failed; it keeps resting", vo.client_order_id)
            return False
        if status is None or status.state not in (OrderState.CANCELED, OrderState.FILLED):
            return False
        b.withdraw(vo, status)
        return o.remaining_lots > 0

    # ---- venue orders -----------------------------------------------------------------------

    def _rest_to_venue(
        self, orders: list[IntentOrder], left: np.ndarray, now: int, b: Batch
    ) -> None:
        """What is left: one MARKET venue order per side, one venue order per LIMIT."""
        market: dict[int, list[IntentOrder]] = {}
        limits = []
        for o, lots in zip(orders, left.tolist(), strict=True):
            if lots and o.order_type == OrderType.MARKET:
                market.setdefault(o.side, []).append(o)
            elif lots:
                limits.append(o)
        for side, shares in market.items():
            self._venue_order(shares[0].symbol, side, OrderType.MARKET, 0.0, shares, now, b)
        for o in limits:
            self._venue_order(o.symbol, o.side, OrderType.LIMIT, o.limit_price, [o], now, b)

    def _venue_order(
        self,
        symbol: int,
        side: int,
        order_type: int,
        limit: float,
        orders: list[IntentOrder],
        now: int,
        b: Batch,
    ) -> None:
        """One venue order for the remaining lots of ``orders``."""
        allocs = [Allocation(o.client_order_id, o.remaining_lots) for o in orders]
        seq, cid = self.journal.next_venue_order_id()
        b.add_venue_order(
            VenueOrder(
                client_order_id=cid, venue_seq=seq, symbol=symbol, side=side,
                order_type=order_type, qty_lots=sum(a.lots for a in allocs),
                lot=float(self.lots[symbol]), limit_price=limit, created_ns=now,
                allocations=allocs,
            )
        )  # fmt: skip
